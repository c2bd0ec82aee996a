"""Unconstrained Langevin MD of a system, one resumable run per temperature: training data
(arbg md; openmm_arbg.simulation.md.run_md)."""

import math
import os

from .common import add_options, check_start_options, positive_int

NAME = "md"
HELP = "run unconstrained Langevin MD to make training data"


def add_arguments(p):
    add_options(p, "system")
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="temperatures in K, one run each (default: the system's, 300 K for alanine dipeptide, 310 K for peptides)")
    p.add_argument("--ns", type=float, default=1.0, help="simulated time per temperature in ns (default %(default)s)")
    p.add_argument("--report-ps", type=float, default=0.2, help="ps between saved frames (default %(default)s)")
    p.add_argument("--equilibration-ps", type=float, default=10.0, help="ps of dynamics before the first saved frame (default %(default)s)")
    add_options(p, "timestep_fs")
    p.add_argument("--friction-per-ps", type=float, default=1.0,
                   help="Langevin friction (collision rate) in 1/ps: it does not change the Boltzmann distribution that the "
                        "frames sample, only how fast they decorrelate; a higher friction decorrelates the potential "
                        "energy faster and slows conformational changes (default %(default)s)")
    add_options(p, "platform", "seed")
    p.add_argument("--output", default="arbg_md", help="output folder; one subfolder per temperature (default %(default)s)")
    p.add_argument("--chunk-frames", type=positive_int, default=1000,
                   help="frames per saved chunk: what an interruption can lose (default %(default)s)")
    p.add_argument("--start-from", default=None, metavar="TRAJECTORY",
                   help="seeded MD: split each run into --n-starts segments started from frames of this trajectory of the "
                        "same molecule (for example a high-temperature run), chosen by k-means on the backbone dihedrals so "
                        "that they cover every basin it visited; each segment is minimised and equilibrated (--equilibration-ps) "
                        "at the run's temperature")
    p.add_argument("--start-topology", default=None,
                   help="topology (PDB) of --start-from (default: topology.pdb beside it, else the system's own)")
    p.add_argument("--start-basins", action="store_true",
                   help="seeded MD whose starts have every residue's backbone (phi, psi) rotated rigidly into each "
                        "Ramachandran basin in turn (alpha_R, beta, PII, alpha_L, C7ax), and every side chain's chi1 "
                        "into each rotamer (p +60, t 180, m -60 deg), so the model sees basins and rotamers that no "
                        "MD visited: the system's structure rotated, or with --start-from the chosen frames rotated "
                        "(--n-starts a multiple of 15 gives every residue every basin and rotamer equally often)")
    p.add_argument("--n-starts", type=positive_int, default=20,
                   help="number of seeded segments with --start-from or --start-basins (default %(default)s)")
    add_options(p, "quiet")


def validate(args, parser):
    for name, value in (("--ns", args.ns), ("--report-ps", args.report_ps), ("--timestep-fs", args.timestep_fs)):
        if not (math.isfinite(value) and value > 0):
            parser.error(f"{name} must be a positive number; got {value}")
    if not (math.isfinite(args.friction_per_ps) and args.friction_per_ps > 0):
        parser.error(f"--friction-per-ps must be a positive number (1/ps; without friction the run holds no temperature); "
                     f"got {args.friction_per_ps}")
    if not (math.isfinite(args.equilibration_ps) and args.equilibration_ps >= 0):
        parser.error(f"--equilibration-ps must not be negative (ps); got {args.equilibration_ps}")
    if args.temperatures and not all(math.isfinite(t) and t > 0 for t in args.temperatures):
        parser.error(f"--temperatures must be positive numbers (K); got {' '.join(f'{t:g}' for t in args.temperatures)}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        parser.error(f"--output {args.output} is a file; give a folder")
    check_start_options(args, parser)
    if args.start_from or args.start_basins:
        from ..simulation.md import steps_from_ps

        try:
            n_steps, report = steps_from_ps(args.ns * 1e3, args.report_ps, args.timestep_fs, f"--ns {args.ns}")
        except ValueError as exc:
            parser.error(str(exc))
        if (n_steps // report) % args.n_starts:
            parser.error(f"seeded MD splits each run's {n_steps // report} frames evenly over --n-starts {args.n_starts}: "
                         "choose --ns, --report-ps and --n-starts so that the frame count is a multiple of the number of starts")


def run(args):
    import openmm.unit as unit

    from ..simulation.md import run_md, steps_from_ps
    from ..simulation.systems import build_system

    ms = build_system(args.system)
    n_steps, report = steps_from_ps(args.ns * 1e3, args.report_ps, args.timestep_fs, f"--ns {args.ns}")
    starts = None
    if args.start_from:
        starts = _start_positions(ms, args.start_from, args.start_topology, args.n_starts, args.seed, not args.start_basins)
        print(f"seeded MD: {len(starts)} segments of {args.ns * 1e3 / len(starts):g} ps from frames of {args.start_from}")
    if args.start_basins:
        starts = _rotated_into_basins(ms, ms.positions_nm() if starts is None else starts, args.n_starts, args.seed)
    for T in args.temperatures or [ms.temperature.value_in_unit(unit.kelvin)]:
        out = os.path.join(args.output, f"{T:g}K")
        traj = run_md(
            ms, out, n_steps=n_steps, report_interval=report, temperature=T, timestep_fs=args.timestep_fs,
            friction_per_ps=args.friction_per_ps, seed=args.seed, platform=args.platform,
            equilibration_steps=int(round(args.equilibration_ps * 1e3 / args.timestep_fs)), progress=not args.quiet,
            chunk_frames=args.chunk_frames, start_positions=starts,
        )
        print(f"{out}: {traj.n_frames} frames at {T:g} K -> {out}/trajectory.dcd (topology {out}/topology.pdb)")


def _start_positions(ms, path, topology_path, n_starts, seed, report_left_handed=True):
    """Positions (nm) of ``n_starts`` frames of ``path`` that cover its backbone conformations;
    with ``report_left_handed``, how many of them (and of its frames) have 0 < phi < 120 deg."""
    from ..simulation.md import choose_start_frames, left_handed_starts
    from .common import load_start_trajectory

    traj = load_start_trajectory(ms, path, topology_path)
    idx = choose_start_frames(traj.xyz, traj.topology, n_starts, seed=seed)
    for name, (starts, frames) in left_handed_starts(traj.xyz, traj.topology, idx).items() if report_left_handed else ():
        print(f"seeded MD: 0 < {name} < 120 deg in {starts} of {len(idx)} starts ({frames} of {traj.n_frames} frames of --start-from)")
    return traj.xyz[idx]


def _rotated_into_basins(ms, positions, n_starts, seed):
    """``basin_starts`` of the structure(s), with what each residue got printed."""
    import collections

    from ..simulation.md import CHI1_ROTAMERS, RAMACHANDRAN_BASINS, basin_starts

    starts, basins = basin_starts(positions, ms.topology, n_starts, seed=seed)
    residues = list(ms.topology.residues())
    for residue, names in basins.items():
        count = collections.Counter(names)
        if residue.startswith("chi1_"):
            print(f"seeded MD: residue {residue[5:]}'s side chain ({residue}) rotated into rotamers "
                  + ", ".join(f"{b} ({CHI1_ROTAMERS[b]:+.0f} deg) {count[b]}" for b in CHI1_ROTAMERS) + f" of {n_starts} starts")
            continue
        ring = f" (phi{residue} is in proline's ring: only psi{residue} is set)" if residues[int(residue) - 1].name == "PRO" else ""
        print(f"seeded MD: residue {residue} (phi{residue}, psi{residue}) rotated into "
              + ", ".join(f"{b} {count[b]}" for b in RAMACHANDRAN_BASINS) + f" of {n_starts} starts{ring}")
    return starts
