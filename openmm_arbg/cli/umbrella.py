"""Umbrella sampling on dihedrals + MBAR: region probabilities and free energies in
result.json, and optionally frames resampled from the unbiased distribution (arbg umbrella;
openmm_arbg.simulation.umbrella.run_umbrella)."""

import math
import os

from ..analysis.observables import BASINS
from .common import add_options, check_start_options, check_state_options, non_negative_int, positive_int, user_states

NAME = "umbrella"
HELP = "umbrella sampling on dihedrals + MBAR: a converged reference for rare basins"
REGIONS = ("all", "phi>0") + tuple(b for b in BASINS if b != "phi>0")


def add_arguments(p):
    add_options(p, "system")
    p.add_argument("--dihedrals", nargs="+", default=["phi", "psi"],
                   help="restrained dihedrals: phi, psi (the first residue's), phiK, psiK, chiN_K (residue K, from 1) or i,j,k,l atom "
                   "indices (default: phi psi)")
    p.add_argument("--windows", type=int, default=18, help="windows per dihedral on a regular grid (default %(default)s)")
    p.add_argument("--k", type=float, default=100.0, help="restraint force constant in kJ/mol/rad^2 (default %(default)s)")
    p.add_argument("--ps", type=float, default=200.0, help="production ps per window (default %(default)s)")
    p.add_argument("--report-ps", type=float, default=0.1, help="ps between saved frames (default %(default)s)")
    p.add_argument("--equilibration-ps", type=float, default=10.0, help="ps per window before saving (default %(default)s)")
    p.add_argument("--start-from", default=None, metavar="TRAJECTORY",
                   help="equilibrium MD of the molecule: each window starts from one of its frames drawn at random, the "
                   "restrained dihedrals rotated into the window, so that what the restraints leave free (other residues, "
                   "side chains) starts at equilibrium instead of relaxing from one structure during the window")
    p.add_argument("--start-topology", default=None,
                   help="topology (PDB) of --start-from (default: topology.pdb beside it, else the system's own)")
    add_options(p, "timestep_fs", "temperature", "platform", "workers", "seed", workers=dict(help="worker processes, one window each (default %(default)s)"))
    p.add_argument("--save-positions", action="store_true", help="keep every frame's positions (e.g. as training data)")
    p.add_argument("--mbar-samples", type=positive_int, default=200,
                   help="decorrelated frames per window used by MBAR, at most (default %(default)s)")
    p.add_argument("--export", type=non_negative_int, default=0,
                   help="write this many frames resampled from the unbiased distribution to frames.dcd (needs --save-positions)")
    p.add_argument("--export-region", choices=REGIONS, default="all", help="restrict --export to a region (default %(default)s)")
    p.add_argument("--export-windows", action="store_true",
                   help="write every saved frame of every window, as simulated (biased: an even coverage of the restrained "
                   "dihedrals, each frame Boltzmann-distributed given them) to windows.dcd: training data for the conditionals "
                   "that arbg profile uses (needs --save-positions)")
    p.add_argument("--state", action="append", default=[], metavar="NAME=EXPRESSION",
                   help="also report the MBAR population of a state, e.g. 'alphaR=phi2 < 0 and -120 <= psi2 <= 50' (as arbg "
                   "free-energy --state; needs --save-positions); repeat for several")
    p.add_argument("--states-file", metavar="FILE.json",
                   help="also report MBAR populations of the states of arbg free-energy --discover N --save-states FILE.json "
                   "(needs --save-positions)")
    p.add_argument("--output", default="arbg_umbrella", help="folder for windows and result.json (resumable)")
    add_options(p, "quiet")


def validate(args, parser):
    if args.windows < 2:
        parser.error(f"--windows must be an integer >= 2 (windows per dihedral); got {args.windows}")
    for name, value in (("--k", args.k), ("--ps", args.ps), ("--report-ps", args.report_ps)):
        if not (math.isfinite(value) and value > 0):
            parser.error(f"{name} must be a positive number; got {value}")
    if not (math.isfinite(args.equilibration_ps) and args.equilibration_ps >= 0):
        parser.error(f"--equilibration-ps must not be negative (ps); got {args.equilibration_ps}")
    if (args.export or args.export_windows) and not args.save_positions:
        parser.error("--export and --export-windows write the windows' positions: add --save-positions")
    if (args.state or args.states_file) and not args.save_positions:
        parser.error("--state and --states-file are evaluated on the windows' positions: add --save-positions")
    check_start_options(args, parser)
    check_state_options(args, parser)


def run(args):
    import shlex

    import numpy as np

    from ..analysis.observables import dihedral_indices, dihedral_regions
    from ..simulation.md import steps_from_ps
    from ..simulation.systems import build_system
    from ..simulation.umbrella import dihedral_grid, run_umbrella
    from ..utils import atomic_write, write_json_atomic
    from .common import temperature_K

    ms = build_system(args.system)
    dihedrals = dihedral_indices(ms.topology, args.dihedrals)
    T = temperature_K(args, ms)
    n_steps, report = steps_from_ps(args.ps, args.report_ps, args.timestep_fs, f"--ps {args.ps}")
    if args.export_region != "all" and args.export_region not in dihedral_regions(args.dihedrals):  # before any window runs
        raise ValueError(f"--export-region {args.export_region} is not defined for --dihedrals {' '.join(args.dihedrals)}")
    states = user_states(args, ms.topology)[0]  # a wrong expression or states file fails before any window runs
    starts = None
    if args.start_from:
        from .common import load_start_trajectory

        starts = load_start_trajectory(ms, args.start_from, args.start_topology).xyz
        print(f"umbrella: each window starts from a random one of the {len(starts)} frames of {args.start_from}")
    result = run_umbrella(
        ms, dihedrals, dihedral_grid(args.windows, len(dihedrals)), args.output, k=args.k, n_steps=n_steps, report_interval=report,
        equilibration_steps=int(round(args.equilibration_ps * 1e3 / args.timestep_fs)), temperature=T, timestep_fs=args.timestep_fs,
        seed=args.seed, platform=args.platform, n_workers=args.workers, save_positions=args.save_positions,
        max_samples_per_window=args.mbar_samples, progress=not args.quiet, start_positions=starts,
    )
    summary = result.summary(args.dihedrals, command=shlex.join(["arbg", "umbrella", *args.argv]))
    summary["system"] = args.system
    print(
        f"MBAR over {summary['windows']} windows, {summary['mbar_frames']} decorrelated frames (at most {args.mbar_samples} per "
        f"window, fewest {summary['min_mbar_frames_per_window']}), {T:g} K:"
    )
    for name in dihedral_regions(args.dihedrals):
        _print_population(name, summary[name])
    if not dihedral_regions(args.dihedrals) and not (args.state or args.states_file):
        print("  (no built-in regions for these dihedrals: ask for populations with --state NAME=EXPRESSION, e.g. "
              "'alphaL=phi2 > 0', with --save-positions; the profile is in profile.csv)")
    if states:
        summary["states"] = result.state_free_energies(states, ms.topology)
        for name, r in summary["states"].items():
            if r["probability"] == 0:
                print(f"  P({name}) = 0 (no decorrelated frame of any window in it)")
            else:
                _print_population(name, r)
    summary["overlap"] = _overlap_check(result, args)
    summary["halves"] = _halves_check(result, args, states, ms.topology)
    path = os.path.join(args.output, "result.json")
    write_json_atomic(path, summary)
    try:
        centres, f, err = result.profile(args.windows)  # one bin per window and dihedral
    except Exception as exc:  # noqa: BLE001 - the profile is extra; result.json is already written
        print(f"-> {path}\nwarning: no profile.csv: MBAR could not compute the per-bin probabilities ({exc})")
    else:
        with atomic_write(os.path.join(args.output, "profile.csv"), "w") as fh:
            fh.write(",".join(f"{n}_deg" for n in args.dihedrals) + ",free_energy_kT,error_kT\n")
            for c, fi, ei in zip(centres, f, err):
                fh.write(",".join(f"{np.degrees(v):.6g}" for v in c) + f",{fi:.6g},{ei:.6g}\n")
        print(f"-> {path}, {os.path.join(args.output, 'profile.csv')} (free energy per bin, MBAR)")
        finite = np.asarray(err, float)[np.isfinite(err)]
        if len(finite) and np.median(finite) > 1.0:
            print(f"warning: the profile's errors are {np.median(finite):.2g} kT at the median bin: the windows hardly overlap "
                  "or are too short; run more windows (--windows), softer or longer ones (--k, --ps)")
    if args.export_windows:
        import mdtraj

        top = mdtraj.Topology.from_openmm(ms.topology) if not isinstance(ms.topology, mdtraj.Topology) else ms.topology
        path = os.path.join(args.output, "windows.dcd")
        xyz = np.concatenate(result.positions).astype(np.float32)
        with atomic_write(path, mode=None) as tmp:
            mdtraj.Trajectory(xyz, top).save(tmp)
        pdb = os.path.join(args.output, "topology.pdb")  # the molecule, so that windows.dcd can be read (arbg train --topology)
        with atomic_write(pdb, mode=None) as tmp:
            mdtraj.Trajectory(xyz[:1], top).save_pdb(tmp)
        print(f"{len(xyz)} frames of {len(result.positions)} windows (biased) -> {path} (topology: {pdb})")
    if args.export:
        frames = result.export(os.path.join(args.output, "frames.dcd"), ms.topology, args.export, args.export_region, args.dihedrals, rng=args.seed)
        print(f"{args.export} frames resampled from the unbiased distribution ({args.export_region}) -> {frames}")


def _halves_check(result, args, states, topology):
    """Populations from the first and the second half of every window; a warning where they
    differ by more than 3 combined standard errors, in probability or log-odds (windows not
    equilibrated; :func:`_halves_disagree`). Returns
    name -> [P first half, error, P second half, error] for result.json."""
    import numpy as np

    from ..analysis.observables import dihedral_regions

    out = {}
    try:
        halves = result.halves()
        for name, indicator in dihedral_regions(args.dihedrals).items():
            out[name] = [v for h in halves for v in h.probability(indicator)]
        if states:
            per_half = [h.state_free_energies(states, topology) for h in halves]
            for name in states:
                out[name] = [v for r in per_half for v in (r[name]["probability"], r[name]["probability_error"])]
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:  # too few frames per half for MBAR
        print(f"note: no check of the windows' halves ({exc})")
        return None
    drifted = drifted_populations(out)
    if drifted:
        print("warning: the first and second halves of the windows disagree by more than 3 standard errors ("
              + "; ".join(drifted) + "): something the restraints leave free moves too slowly for these windows (it is still "
              "relaxing from the starting structure, or turns over only a few times per window), and MBAR's errors, which "
              "count the restrained dihedrals' correlation only, are too small for these populations. Run longer windows "
              "(--ps), start them from equilibrium MD (--start-from), or restrain that coordinate too (--dihedrals), in a new "
              "--output folder (a folder's windows keep the settings they were run with)")
    return out


def _overlap_check(result, args):
    """The windows' weakest link (UmbrellaResult.overlap), printed; a warning where the windows come
    apart into groups that share too few frames. Returns what result.json keeps."""
    import numpy as np

    o = result.overlap()
    deg = np.degrees(result.centres)
    i, j, link = o["weakest"]
    print(f"  windows joined down to an overlap of {link:.3f}, between the windows at {_window_label(args.dihedrals, deg[i])} "
          f"and {_window_label(args.dihedrals, deg[j])} deg "
          f"(MBAR overlap matrix; spectral gap {o['spectral_gap']:.4f})")
    if len(o["groups"]) > 1:
        print(f"warning: the windows fall into {len(o['groups'])} groups that share too few frames (overlap below "
              f"{o['threshold']:g} between groups; the smaller groups: "
              + "; ".join(_describe_windows(deg[g], deg, args.dihedrals) for g in o["groups"][1:])
              + "): the free energy between the groups, and every population that spans them, is not determined "
              "by these windows, whatever the errors above say. Where the free energy is steep, each window slides "
              "down the slope away from its centre: use a stiffer restraint (--k, e.g. 300 kJ/mol/rad^2) with more "
              "windows (--windows) so that neighbours overlap, in a new --output folder")
    return dict(groups=o["groups"], weakest=[i, j, link], spectral_gap=o["spectral_gap"], threshold=o["threshold"])


def _window_label(names, centre_deg):
    """A window by its centre: ``(phi2 130)`` or ``(psi2 15, chi1_2 -15)`` (degrees)."""
    return "(" + ", ".join(f"{n} {v:.0f}" for n, v in zip(names, centre_deg)) + ")"


def _describe_windows(centres, all_centres, names):
    """Windows by their centres (deg): listed when few, else by the grid values of each dihedral
    they take ("any" where they take every value of the grid)."""
    import numpy as np

    if len(centres) <= 4:
        return ", ".join(_window_label(names, c) for c in centres) + " deg"
    parts = []
    for j, name in enumerate(names):
        values = np.unique(np.round(centres[:, j], 6))
        if len(values) == len(np.unique(np.round(all_centres[:, j], 6))):
            parts.append(f"{name} any")
        else:
            parts.append(f"{name} in {{" + ", ".join(f"{v:.0f}" for v in values) + "} deg")
    return f"{len(centres)} windows, " + " and ".join(parts)


def drifted_populations(halves):
    """``"name P1 % then P2 %"`` for each population of ``halves`` (name -> [P first half, error, P
    second half, error]) whose halves disagree (:func:`_halves_disagree`)."""
    return [f"{name} {100 * p1:.2f} % then {100 * p2:.2f} %" for name, (p1, e1, p2, e2) in halves.items()
            if _halves_disagree(p1, e1, p2, e2)]


def _halves_disagree(p1, e1, p2, e2, z=3.0):
    """Whether two estimates of one population (probabilities and standard errors) differ by more
    than ``z`` combined standard errors, either in probability or in log-odds (logit p, its error
    e / (p (1 - p)) by the delta method). The log-odds catch a rare state's drift that the
    probability hides: 0.44 +- 0.19 % then 8.4 +- 2.7 % is 2.9 errors apart in probability and 5.4 in
    log-odds. Differences under 0.1 percentage points are never flagged."""
    if abs(p1 - p2) <= 1e-3:
        return False
    err = math.hypot(e1 if math.isfinite(e1) else 0.0, e2 if math.isfinite(e2) else 0.0)
    if abs(p1 - p2) > z * err:
        return True
    if 0 < p1 < 1 and 0 < p2 < 1 and math.isfinite(e1) and math.isfinite(e2):
        logit_err = math.hypot(e1 / (p1 * (1 - p1)), e2 / (p2 * (1 - p2)))
        return abs(math.log(p1 / (1 - p1)) - math.log(p2 / (1 - p2))) > z * logit_err
    return False


def _print_population(name, r):
    """One line of MBAR's probability and free energy of a region or state."""
    print(f"  P({name}) = {100 * r['probability']:.4f} +- {100 * r['probability_error']:.4f} %   "
          f"F({name}) - F(rest) = {r['free_energy_kT']:.3f} +- {r['free_energy_error_kT']:.3f} kT")
