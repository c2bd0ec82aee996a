"""The quick-start job on alanine dipeptide: MD, a small model trained here, importance sampling
and ArBGMove with the shipped model, every estimate against the shipped reference (arbg demo;
openmm_arbg.demo.run_demo)."""

import math
import os

from .common import add_options

NAME = "demo"
HELP = "the quick-start job on alanine dipeptide (a few minutes on 2 cores)"


def add_arguments(p):
    p.add_argument("--output", default="arbg_demo", help="output folder (default %(default)s)")
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget in minutes (default %(default)s)")
    add_options(p, "seed")
    p.add_argument("--quiet", action="store_true", help="print only the report")


def validate(args, parser):
    if not (math.isfinite(args.minutes) and args.minutes > 0):
        parser.error(f"--minutes must be a positive number (the training time budget); got {args.minutes}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        parser.error(f"--output {args.output} is a file; give a folder")


def run(args):
    from ..demo import run_demo

    run_demo(args.output, minutes=args.minutes, quiet=args.quiet, seed=args.seed, threads=args.threads or None)
