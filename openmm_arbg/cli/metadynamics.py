"""Well-tempered metadynamics on dihedrals, then MD under the frozen bias, reweighted: populations
and free energies in result.json, with a check of the run's two halves (arbg metadynamics;
openmm_arbg.simulation.metadynamics.run_metadynamics)."""

import math
import os

from .common import add_options, check_state_options, positive_float, positive_int, user_states

NAME = "metadynamics"
HELP = "metadynamics on 1-3 dihedrals, then MD under the frozen bias: a reference where slow dihedrals move together"


def add_arguments(p):
    add_options(p, "system")
    p.add_argument("--dihedrals", nargs="+", default=["phi", "psi"],
                   help="biased dihedrals (1 to 3): phi, psi (the first residue's), phiK, psiK, chiN_K (residue K, from 1) or "
                   "i,j,k,l atom indices (default: phi psi)")
    p.add_argument("--build-ps", type=positive_float, default=1000.0,
                   help="ps of metadynamics that build the bias (its frames are not used; default %(default)s)")
    p.add_argument("--ps", type=positive_float, default=4000.0,
                   help="ps of MD under the frozen bias, whose frames are reweighted (default %(default)s)")
    p.add_argument("--report-ps", type=positive_float, default=0.5, help="ps between saved frames (default %(default)s)")
    p.add_argument("--bias-factor", type=float, default=8.0,
                   help="well-tempered bias factor gamma > 1: the dihedrals are sampled as at gamma T (default %(default)s)")
    p.add_argument("--height", type=positive_float, default=1.0, help="initial Gaussian height in kJ/mol (default %(default)s)")
    p.add_argument("--width-deg", type=positive_float, default=20.0, help="Gaussian width in degrees (default %(default)s)")
    p.add_argument("--deposit-ps", type=positive_float, default=0.5, help="ps between Gaussians (default %(default)s)")
    p.add_argument("--hydrogen-mass", type=float, default=None,
                   help="repartition hydrogen masses to this many Da (e.g. 3 with --timestep-fs 2): faster, the same "
                   "configurational distribution (default: the System's masses)")
    p.add_argument("--chunks", type=positive_int, default=10, help="each phase is saved in this many chunks, the unit of "
                   "resuming (default %(default)s)")
    p.add_argument("--start-from", default=None, metavar="TRAJECTORY", help="start from the last frame of this trajectory of "
                   "the molecule (default: the system's structure)")
    p.add_argument("--start-topology", default=None, help="topology (PDB) of --start-from (default: topology.pdb beside it)")
    add_options(p, "timestep_fs", "temperature", "platform", "seed")
    p.add_argument("--state", action="append", default=[], metavar="NAME=EXPRESSION",
                   help="also report the population of a state, e.g. 'chi1t2=abs(chi1_2) > 120' (as arbg free-energy --state); "
                   "repeat for several")
    p.add_argument("--states-file", metavar="FILE.json", help="also report populations of the states of arbg free-energy "
                   "--discover N --save-states FILE.json")
    p.add_argument("--pool", nargs="+", default=[], metavar="FOLDER",
                   help="also pool this run with finished runs of the same molecule, temperature and dihedrals in these folders "
                   "(other seeds): the mean of the runs, with an error from their scatter where that is larger than their "
                   "own errors say")
    p.add_argument("--output", default="arbg_metadynamics", help="folder for the chunks and result.json (resumable)")
    add_options(p, "quiet")


def validate(args, parser):
    from .common import check_start_options

    if not (math.isfinite(args.bias_factor) and args.bias_factor > 1):
        parser.error(f"--bias-factor must be a number > 1; got {args.bias_factor}")
    if args.hydrogen_mass is not None and not 1.0 <= args.hydrogen_mass <= 5.0:
        parser.error(f"--hydrogen-mass must be between 1 and 5 Da; got {args.hydrogen_mass}")
    if not 1 <= len(args.dihedrals) <= 3:
        parser.error(f"--dihedrals takes 1 to 3 dihedrals (OpenMM's metadynamics tabulates at most 3); got {len(args.dihedrals)}")
    check_start_options(args, parser)
    check_state_options(args, parser)
    for folder in args.pool:
        if not os.path.isfile(os.path.join(folder, "settings.json")):
            parser.error(f"--pool {folder}: no metadynamics run there (no settings.json)")


def _steps(ps, timestep_fs, option, multiple):
    """Whole steps in ``ps``, a multiple of ``multiple`` (a usage error otherwise)."""
    steps = int(round(ps * 1e3 / timestep_fs))
    if steps < multiple or steps % multiple:
        raise ValueError(f"{option} {ps:g} is {steps} steps of {timestep_fs:g} fs; it must be a positive multiple of {multiple} "
                         "steps (--chunks x the saving or deposit interval)")
    return steps


def run(args):
    import shlex

    from ..analysis.observables import dihedral_indices, dihedral_regions
    from ..simulation.metadynamics import run_metadynamics
    from ..simulation.systems import build_system
    from ..utils import write_json_atomic
    from .common import temperature_K
    from .umbrella import drifted_populations

    ms = build_system(args.system)
    dihedrals = dihedral_indices(ms.topology, args.dihedrals)
    T = temperature_K(args, ms)
    report = _steps(args.report_ps, args.timestep_fs, "--report-ps", 1)
    deposit = _steps(args.deposit_ps, args.timestep_fs, "--deposit-ps", 1)
    n_steps = _steps(args.ps, args.timestep_fs, "--ps", args.chunks * report)
    build_steps = _steps(args.build_ps, args.timestep_fs, "--build-ps", args.chunks * deposit)
    states = user_states(args, ms.topology)[0]  # a wrong expression fails before anything runs
    start = None
    if args.start_from:
        from .common import load_start_trajectory

        start = load_start_trajectory(ms, args.start_from, args.start_topology).xyz[-1]
    result = run_metadynamics(
        ms, dihedrals, args.output, n_steps=n_steps, build_steps=build_steps, report_interval=report, bias_factor=args.bias_factor,
        height=args.height, width_deg=args.width_deg, deposit_interval=deposit, n_chunks=args.chunks, temperature=T,
        timestep_fs=args.timestep_fs, hydrogen_mass=args.hydrogen_mass, seed=args.seed, platform=args.platform,
        start_positions=start, progress=not args.quiet,
    )
    summary = result.summary(args.dihedrals, command=shlex.join(["arbg", "metadynamics", *args.argv]))
    summary["system"] = args.system
    print(f"{summary['frames']} frames of {summary['production_ps']:g} ps under the frozen bias (largest "
          f"{summary['largest_bias_kJ_per_mol']:.1f} kJ/mol), reweighted; the weights keep "
          f"{100 * summary['weights_effective_fraction']:.0f} % of the frames, {T:g} K:")
    for name in dihedral_regions(args.dihedrals):
        _print_population(name, summary[name])
    if states:
        summary["states"] = result.state_free_energies(states, ms.topology)
        for name, r in summary["states"].items():
            _print_population(name, r)
    found = {**{name: summary[name] for name in dihedral_regions(args.dihedrals)}, **summary.get("states", {})}
    few = [f"{name} ({r['entries']})" for name, r in found.items() if 0 < r["probability"] < 1 and r["entries"] < 10]
    if few:
        print("warning: the run entered " + ", ".join(few) + " fewer than 10 times: those populations rest on a few visits "
              "and their errors are not reliable. Run longer (--ps), or build the bias longer (--build-ps) so that the "
              "biased dihedrals cross more often")
    halves = {}
    for part in result.halves():
        found = {**part.region_free_energies(args.dihedrals), **(part.state_free_energies(states, ms.topology) if states else {})}
        for name, r in found.items():
            halves.setdefault(name, []).extend([r["probability"], r["probability_error"]])
    drifted = drifted_populations(halves)
    summary["halves"] = halves
    if drifted:
        print("warning: the first and second halves of the run disagree by more than 3 standard errors (" + "; ".join(drifted)
              + "): something slow is not biased, or the bias does not yet let the biased dihedrals cross often. Run longer "
              "(--ps, --build-ps), or bias that coordinate too (--dihedrals), in a new --output folder")
    if args.pool:
        summary["pooled"] = _pool(result, args, states, ms.topology)
    path = os.path.join(args.output, "result.json")
    write_json_atomic(path, summary)
    print(f"-> {path}")


def _print_population(name, r):
    """One line: the reweighted probability and free energy of a region or state, its frames and entries."""
    if r["probability"] == 0:
        print(f"  P({name}) = 0 (no frame in it)")
        return
    print(f"  P({name}) = {100 * r['probability']:.2f} +- {100 * r['probability_error']:.2f} %   "
          f"F({name}) - F(rest) = {r['free_energy_kT']:.3f} +- {r['free_energy_error_kT']:.3f} kT   "
          f"({r['frames']} frames, {r['entries']} entries)")


def _pool(result, args, states, topology):
    """This run pooled with the finished runs of ``--pool``, printed (pool_runs); returns what
    result.json keeps."""
    from ..simulation.metadynamics import load_metadynamics, pool_runs

    runs = [result] + [load_metadynamics(folder) for folder in args.pool]
    pooled = pool_runs(runs, args.dihedrals, states or None, topology)
    print(f"pooled over {len(runs)} runs ({args.output}, {', '.join(args.pool)}): the mean, its error the larger of the runs' "
          "own and their scatter's:")
    wide = []
    for name, r in pooled.items():
        if not any(r["runs"]):
            print(f"  P({name}) = 0 (no frame of any run in it)")
            continue
        each = ", ".join(f"{100 * p:.2f}" for p in r["runs"])
        print(f"  P({name}) = {100 * r['probability']:.2f} +- {100 * r['probability_error']:.2f} %   (runs: {each}; "
              f"dispersion {r['dispersion']:.2g})")
        if r["dispersion"] > 3:
            wide.append(f"{name} ({r['dispersion']:.2g})")
    if wide:
        print("note: the runs scatter more than their errors say for " + ", ".join(wide) + " (dispersion: chi-square per "
              "degree of freedom, about 1 when the errors are right): one run's error is too small there; the pooled error "
              "above uses the scatter")
    return pooled
