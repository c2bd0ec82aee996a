"""Free-energy profile (potential of mean force) of one or two dihedrals without umbrella windows
(arbg profile): each grid point fixes the dihedrals in the model's generation and importance-
samples the rest of the molecule from the model's exact conditional
(openmm_arbg.sampling.control.dihedral_profile). The dihedrals must be model coordinates: train
the model with --first-torsions (e.g. arbg train ... --first-torsions phi psi). Writes
profile.csv, profile.png and result.json; with --reference UMBRELLA_FOLDER (an arbg umbrella run
over the same dihedrals) it also compares the two profiles point by point."""

from .common import add_options

NAME = "profile"
HELP = "free-energy profile of one or two dihedrals by conditional importance sampling"
REQUIRED = ("model",)


def add_arguments(p):
    add_options(p, "model", "device", "target", "temperature", "proposal_temperature")
    p.add_argument("--dihedrals", nargs="+", default=["phi"],
                   help="one or two dihedrals: phi, psi, phiK, psiK, chiN_K (residue K, from 1) or i,j,k,l (default: phi)")
    p.add_argument("--grid", type=int, default=36, help="bins per dihedral (default %(default)s)")
    p.add_argument("--n-per-point", type=int, default=1000,
                   help="proposals (energy evaluations) per bin, shared by its sub-points (default %(default)s)")
    p.add_argument("--subdivisions", type=int,
                   help="points per dihedral inside each bin, whose mean gives the bin-averaged free energy that a "
                   "histogram or umbrella + MBAR bin estimates (a single point's value differs from it by up to 0.3 kT "
                   "on steep flanks of 10-degree bins); 1 gives the density at the bin centre (default 4 for one "
                   "dihedral, 2 for two)")
    p.add_argument("--batch-size", type=int, default=4096, help="configurations generated at once (default %(default)s)")
    p.add_argument("--reference", help="an arbg umbrella run over the same dihedrals to compare with: its folder, or a "
                   "reference JSON with a profile (e.g. the shipped alanine_dipeptide_vacuum_300K_phi_umbrella, by name)")
    p.add_argument("--reference-mbar-samples", type=int, default=2000,
                   help="decorrelated frames per umbrella window MBAR uses for --reference, at most (default %(default)s)")
    p.add_argument("--output", default="arbg_profile", help="folder for profile.csv, profile.png and result.json (default %(default)s)")
    add_options(p, "workers", "seed", "quiet")


def validate(args, parser):
    if not 1 <= len(args.dihedrals) <= 2:
        parser.error(f"--dihedrals takes one or two dihedrals; got {len(args.dihedrals)}")
    for name, value, low in (("--grid", args.grid, 2), ("--n-per-point", args.n_per_point, 2), ("--batch-size", args.batch_size, 1),
                             ("--reference-mbar-samples", args.reference_mbar_samples, 2),
                             ("--workers", args.workers, 1)):
        if value < low:
            parser.error(f"{name} must be an integer >= {low}; got {value}")
    if args.subdivisions is None:
        args.subdivisions = 4 if len(args.dihedrals) == 1 else 2
    if args.subdivisions < 1:
        parser.error(f"--subdivisions must be an integer >= 1; got {args.subdivisions}")
    points = args.subdivisions ** len(args.dihedrals)
    if args.n_per_point % points or args.n_per_point // points < 2:
        parser.error(f"--n-per-point {args.n_per_point} must be a multiple of the {points} sub-points of a bin "
                     f"(--subdivisions {args.subdivisions}, {len(args.dihedrals)} dihedral(s)), at least 2 each")


def run(args):
    import json
    import os
    import shlex

    import numpy as np

    from ..analysis.observables import dihedral_regions
    from ..analysis.profiles import compare_profiles, profile_plot
    from ..sampling.control import dihedral_profile
    from ..sampling.energies import ReducedPotential
    from ..utils import write_json_atomic
    from ..utils import check_output_file
    from .common import load_model, target_for_model

    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"--output {args.output} is a file; give a folder")
    check_output_file(os.path.join(args.output, "result.json"))  # before any computing: the folder can be written
    model = load_model(args)
    for d in args.dihedrals:  # before any computing: every dihedral must be a model coordinate
        model.dihedral_coordinate(d)
    reference = None
    if args.reference:
        reference, reference_path = _reference_profile(args)
    ms, T = target_for_model(model, args)
    with ReducedPotential(ms.system, temperature=T, n_workers=args.workers) as u:
        profile = dihedral_profile(model, u, args.dihedrals, n_grid=args.grid,
                                   n_per_point=args.n_per_point // args.subdivisions ** len(args.dihedrals),
                                   proposal_temperature=args.proposal_temperature, seed=args.seed,
                                   batch_size=args.batch_size, progress=not args.quiet, subdivisions=args.subdivisions)
    os.makedirs(args.output, exist_ok=True)
    csv_path = os.path.join(args.output, "profile.csv")
    profile.write_csv(csv_path)
    png = profile_plot(profile, os.path.join(args.output, "profile.png"), reference=reference,
                       reference_label="umbrella + MBAR", title=f"{' / '.join(args.dihedrals)}, {T:g} K")
    result = dict(
        command=shlex.join(["arbg", "profile", *args.argv]),
        model=os.path.abspath(args.model),
        temperature_K=T,
        dihedrals=args.dihedrals,
        model_coordinates=profile.coordinates,
        grid_per_dihedral=args.grid,
        n_per_point=args.n_per_point,
        subdivisions=args.subdivisions,
        n_evaluations=profile.n_evaluations,
        unreliable_points=int((~profile.reliable).sum()),
        regions={},
    )
    sub = f" ({args.subdivisions ** len(args.dihedrals)} sub-points each, bin averages)" if args.subdivisions > 1 else ""
    print(f"profile of {' and '.join(args.dihedrals)} at {T:g} K: {len(profile.free_energy)} bins{sub} x {args.n_per_point} "
          f"proposals = {profile.n_evaluations} energy evaluations")
    for name, indicator in dihedral_regions(args.dihedrals).items():
        f, df = profile.region_free_energy(indicator)
        p, dp = profile.region_probability(indicator)
        result["regions"][name] = dict(probability=p, probability_error=dp, free_energy_kT=f, free_energy_error_kT=df)
        print(f"  P({name}) = {100 * p:.3f} +- {100 * dp:.3f} %   F({name}) - F(rest) = {f:.3f} +- {df:.3f} kT")
    bad = ~profile.reliable
    if bad.any():
        print(f"warning: {int(bad.sum())} of {len(bad)} grid points have Pareto k >= 0.7 or no weight: their error bars are "
              "too small; add --n-per-point or train the model on data that covers those values")
    if reference is not None:
        cmp = compare_profiles(profile.free_energy, profile.error, *reference)
        result["reference"] = dict(
            folder=os.path.abspath(reference_path), n_defined=cmp["n_defined"], max_abs_z=cmp["max_abs_z"],
            chi2_per_point=cmp["chi2_per_point"], within_2_sigma=cmp["within_2_sigma"],
            z=[None if not np.isfinite(z) else float(z) for z in cmp["z"]],
            reference_free_energy=[float(v) if np.isfinite(v) else None for v in reference[0]],
            reference_error=[float(v) if np.isfinite(v) else None for v in reference[1]],
        )
        print(f"  against {args.reference}: {cmp['n_defined']} points compared, max |z| {cmp['max_abs_z']:.2f}, "
              f"chi2/point {cmp['chi2_per_point']:.2f}, {100 * cmp['within_2_sigma']:.0f} % within 2 sigma")
        typical = float(np.median(np.asarray(reference[1], float)[cmp["defined"]]))
        if typical > 1.0:
            print(f"warning: the reference's errors are {typical:.2g} kT at the median point: agreement within them says "
                  "little; run the umbrella windows longer (--ps) or with more overlap (--windows, --k)")
        if args.subdivisions == 1:
            print("note: with --subdivisions 1 each point is the density at a bin centre, while the reference holds bin "
                  "averages; they differ where the profile is curved (up to 0.3 kT on steep flanks of 10-degree bins)")
    path = os.path.join(args.output, "result.json")
    write_json_atomic(path, json.loads(json.dumps(result)))
    print(f"-> {csv_path}, {png}, {path}")


def _reference_profile(args):
    """``((free energy, error) per grid point, path)`` of ``--reference``: an arbg umbrella folder
    (MBAR now), a JSON file with a ``profile`` entry, or the name of a shipped reference (its file)."""
    import json
    import os

    import numpy as np

    path = args.reference
    if not os.path.exists(path):
        from ..pretrained import REFERENCES, reference_path

        if path not in REFERENCES:
            raise FileNotFoundError(f"--reference {path}: no such folder or file, nor a shipped reference ({', '.join(sorted(REFERENCES))})")
        path = reference_path(path)
    if os.path.isdir(path):
        from ..simulation.umbrella import load_umbrella

        umbrella = load_umbrella(path, max_samples_per_window=args.reference_mbar_samples)
        if umbrella.centres.shape[1] != len(args.dihedrals):
            raise ValueError(f"--reference {path} restrains {umbrella.centres.shape[1]} dihedral(s), the profile has {len(args.dihedrals)}")
        _, f, e = umbrella.profile(args.grid)
        return (f, e), path
    with open(path) as fh:
        stored = json.load(fh).get("profile")
    if not stored:
        raise ValueError(f"--reference {path} holds no profile (give an arbg umbrella folder, or a JSON with a 'profile' entry)")
    if len(stored["dihedrals"]) != len(args.dihedrals) or int(stored["n_bins"]) != args.grid:
        raise ValueError(f"--reference {path} is a profile of {stored['dihedrals']} on {stored['n_bins']} bins per dihedral; "
                         f"run with --dihedrals {' '.join(stored['dihedrals'])} --grid {stored['n_bins']}")
    return (np.asarray(stored["free_energy_kT"], dtype=float), np.asarray(stored["error_kT"], dtype=float)), path
