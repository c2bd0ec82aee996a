"""Unconstrained Langevin MD of a system, one resumable run per temperature: training data
(arbg md; openmm_arbg.simulation.md.run_md)."""

import math
import os

from .common import add_options, positive_int

NAME = "md"
HELP = "run unconstrained Langevin MD to make training data"


def add_arguments(p):
    add_options(p, "system")
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="temperatures in K, one run each (default: the system's, 300 K for alanine dipeptide, 310 K for peptides)")
    p.add_argument("--ns", type=float, default=1.0, help="simulated time per temperature in ns (default %(default)s)")
    p.add_argument("--report-ps", type=float, default=0.2, help="ps between saved frames (default %(default)s)")
    p.add_argument("--equilibration-ps", type=float, default=10.0, help="ps of dynamics before the first saved frame (default %(default)s)")
    add_options(p, "timestep_fs", "platform", "seed")
    p.add_argument("--output", default="arbg_md", help="output folder; one subfolder per temperature (default %(default)s)")
    p.add_argument("--chunk-frames", type=positive_int, default=1000,
                   help="frames per saved chunk: what an interruption can lose (default %(default)s)")
    add_options(p, "quiet")


def validate(args, parser):
    for name, value in (("--ns", args.ns), ("--report-ps", args.report_ps), ("--timestep-fs", args.timestep_fs)):
        if not (math.isfinite(value) and value > 0):
            parser.error(f"{name} must be a positive number; got {value}")
    if not (math.isfinite(args.equilibration_ps) and args.equilibration_ps >= 0):
        parser.error(f"--equilibration-ps must not be negative (ps); got {args.equilibration_ps}")
    if args.temperatures and not all(math.isfinite(t) and t > 0 for t in args.temperatures):
        parser.error(f"--temperatures must be positive numbers (K); got {' '.join(f'{t:g}' for t in args.temperatures)}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        parser.error(f"--output {args.output} is a file; give a folder")


def run(args):
    import openmm.unit as unit

    from ..simulation.md import run_md, steps_from_ps
    from ..simulation.systems import build_system

    ms = build_system(args.system)
    n_steps, report = steps_from_ps(args.ns * 1e3, args.report_ps, args.timestep_fs, f"--ns {args.ns}")
    for T in args.temperatures or [ms.temperature.value_in_unit(unit.kelvin)]:
        out = os.path.join(args.output, f"{T:g}K")
        traj = run_md(
            ms, out, n_steps=n_steps, report_interval=report, temperature=T, timestep_fs=args.timestep_fs, seed=args.seed,
            platform=args.platform, equilibration_steps=int(round(args.equilibration_ps * 1e3 / args.timestep_fs)), progress=not args.quiet,
            chunk_frames=args.chunk_frames,
        )
        print(f"{out}: {traj.n_frames} frames at {T:g} K -> {out}/trajectory.dcd (topology {out}/topology.pdb)")
