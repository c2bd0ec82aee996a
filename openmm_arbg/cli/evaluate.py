"""The ArBG paper's metrics of a model against reference frames (ESS, E-W2, T-W2, TICA-W2), a
Markdown table and plots (arbg evaluate; openmm_arbg.analysis.evaluation.evaluate)."""

from .common import add_options, positive_int

NAME = "evaluate"
HELP = "the ArBG paper's metrics (ESS, E-W2, T-W2, TICA-W2) against reference MD, with plots"
REQUIRED = ("model", "reference")


def add_arguments(p):
    add_options(p, "model", "device")
    p.add_argument("--reference", nargs="+", metavar="TRAJECTORY",
                   help="reference trajectory (e.g. long MD), in time order; or several independent runs of the same "
                        "molecule (for example MD with other seeds), pooled: TICA takes each run as its own time series")
    p.add_argument("--topology", help="topology file of the reference trajectory (default: topology.pdb beside it)")
    add_options(p, "target", "temperature", "proposal_temperature")
    p.add_argument("--n", type=positive_int, default=None, help="proposals (default 10000)")
    p.add_argument("--proposals", metavar="SAMPLES",
                   help="evaluate the proposals that arbg sample --output SAMPLES drew and weighed with this model and target "
                        "(without --resample) instead of drawing new ones: the same proposals against another reference at "
                        "no sampling cost (not with --n)")
    p.add_argument("--stride", type=positive_int, default=1, help="reference frame stride (default %(default)s)")
    p.add_argument("--lag", type=positive_int, default=100, help="TICA lag in (strided) reference frames (default %(default)s)")
    p.add_argument("--max-points", type=positive_int, default=5000, help="points per set for exact optimal transport (default %(default)s)")
    add_options(p, "workers", "seed", "quiet")
    p.add_argument("--output", default="arbg_evaluation", help="folder for evaluation.md and plots (default %(default)s)")


def validate(args, parser):
    if args.proposals and args.n is not None:
        parser.error("--proposals evaluates the proposals in that file; leave out --n (it draws new ones)")
    if args.proposals and args.proposal_temperature != 1.0:
        parser.error("--proposals evaluates proposals already drawn: leave out --proposal-temperature")
    if args.n is None:
        args.n = 10000


def run(args):
    import os

    import mdtraj

    from ..analysis.evaluation import evaluate, evaluation_table
    from ..sampling.energies import ReducedPotential
    from ..training import load_trajectories
    from ..utils import atomic_write
    from .common import load_model, print_warnings, target_for_model, topology_file

    model = load_model(args)
    args.topology = topology_file(args.topology, args.reference[0])
    # checked bond by bond
    ref, lengths = load_trajectories(args.reference, args.topology, stride=args.stride, return_lengths=True)
    if max(lengths) <= args.lag:  # before sampling: TICA-W2 needs a reference run longer than its lag
        what = "trajectory" if len(lengths) == 1 else "runs' longest"
        raise ValueError(f"the reference {what} ({max(lengths)} frames) must be longer than the TICA lag (--lag "
                         f"{args.lag}); give a smaller --lag")
    model.check_topology(mdtraj.load_topology(args.topology))
    ms, T = target_for_model(model, args)
    with ReducedPotential(ms.system, temperature=T, n_workers=args.workers) as u:
        drawn = None
        if args.proposals:
            from ..sampling.streaming import load_weighed_proposals

            drawn = load_weighed_proposals(args.proposals, model, u)
            print(f"{args.proposals}: {drawn.n} proposals drawn by arbg sample, ESS/N {100 * drawn.ess_fraction:.2f} %")
        metrics = evaluate(
            model, ref, u, args.n, proposal_temperature=args.proposal_temperature, lag=args.lag, max_points=args.max_points,
            seed=args.seed, output_dir=args.output, progress=not args.quiet, reference_lengths=lengths, result=drawn,
        )
    text = evaluation_table(metrics)
    with atomic_write(os.path.join(args.output, "evaluation.md")) as f:
        f.write(text)
    print(text)
    print_warnings(metrics["warnings"])
    print(f"table -> {os.path.join(args.output, 'evaluation.md')}; plots -> {', '.join(metrics['plots'])}")
