"""MD of many capped peptides, one resumable run per sequence in worker processes: the training
data of a transferable model (arbg peptide-md; openmm_arbg.simulation.peptide_data). Each run goes
to OUTPUT/md_SEQUENCE/<T>K/, as arbg md writes it, so that
``arbg train-transferable --md OUTPUT/md_A OUTPUT/md_S ...`` reads them. Running the same command
again resumes every unfinished run."""

import math

from .common import add_options, non_negative_int

NAME = "peptide-md"
HELP = "run MD of many capped peptides (training data of a transferable model)"
REQUIRED = ("sequences",)


def add_arguments(p):
    p.add_argument("--sequences", nargs="+", help="one-letter sequences, each capped Ace-...-Nme (e.g. A S V KT)")
    p.add_argument("--ns", type=float, default=0.1, help="simulated time per sequence in ns (default %(default)s)")
    p.add_argument("--report-ps", type=float, default=0.25, help="ps between saved frames (default %(default)s)")
    p.add_argument("--temperature", type=float, default=310.0, help="K (default %(default)s)")
    p.add_argument("--equilibration-ps", type=float, default=10.0, help="ps before the first saved frame (default %(default)s)")
    p.add_argument("--basin-starts", type=non_negative_int, default=0,
                   help="seeded MD from this many starts with every residue's (phi, psi) rotated into the Ramachandran "
                        "basins in turn (a multiple of 5; 0: one plain run, the default)")
    add_options(p, "timestep_fs", "platform", "seed", "workers",
                workers=dict(help="worker processes, one sequence and one thread each (default %(default)s)"))
    p.add_argument("--output", default="arbg_peptide_md", help="output folder (default %(default)s)")
    add_options(p, "quiet")


def validate(args, parser):
    for name, value in (("--ns", args.ns), ("--report-ps", args.report_ps), ("--timestep-fs", args.timestep_fs),
                        ("--temperature", args.temperature)):
        if not (math.isfinite(value) and value > 0):
            parser.error(f"{name} must be a positive number; got {value}")
    if not (math.isfinite(args.equilibration_ps) and args.equilibration_ps >= 0):
        parser.error(f"--equilibration-ps must not be negative (ps); got {args.equilibration_ps}")


def run(args):
    from ..simulation.peptide_data import generate_peptide_md, peptide_md_folder

    results = generate_peptide_md(args.sequences, args.output, ns=args.ns, report_ps=args.report_ps,
                                  temperature=args.temperature, timestep_fs=args.timestep_fs,
                                  equilibration_ps=args.equilibration_ps, seed=args.seed, platform=args.platform,
                                  basin_starts=args.basin_starts, workers=args.workers, progress=not args.quiet)
    for seq, (n, path) in results.items():
        print(f"{seq}: {n} frames -> {path}")
    print("train a transferable model on them, holding some sequences out to choose the model: arbg train-transferable "
          "--md " + " ".join(peptide_md_folder(args.output, s) for s in results) + " --validation-md <held-out folders>")
