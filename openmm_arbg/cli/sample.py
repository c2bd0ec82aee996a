"""Draw conformations from a model; importance weights, ESS and a resampled
(Boltzmann-distributed) population against the target system (arbg sample;
openmm_arbg.sampling.importance.importance_sample)."""

from .common import add_options, positive_int

NAME = "sample"
HELP = "draw conformations; importance weights and ESS against the target system"
REQUIRED = ("model",)


def add_arguments(p):
    add_options(p, "model", "device")
    p.add_argument("--n", type=positive_int, default=1000, help="number of proposals (default %(default)s)")
    add_options(p, "target", "temperature", "proposal_temperature", "workers", workers=dict(default=1))
    p.add_argument("--no-weights", action="store_true", help="only draw conformations: no target, no energies, no weights")
    p.add_argument("--resample", action="store_true", help="write a resampled (Boltzmann-distributed) population")
    p.add_argument("--output", help="write samples to this trajectory file (e.g. samples.dcd); chunks are saved in "
                   "OUTPUT.progress/ as they are drawn (with log q, reduced potentials and log weights in result.npz at the end), "
                   "and the same command resumes an interrupted run")
    p.add_argument("--chunk-size", type=positive_int, default=1000,
                   help="proposals per saved chunk with --output: what an interruption can lose, and the unit of seeding (default %(default)s)")
    add_options(p, "seed", seed=dict(default=None, help="random seed (default: none)"))
    add_options(p, "quiet")


def validate(args, parser):
    if args.no_weights and (args.system or args.resample):
        parser.error("--no-weights draws without a target: leave out --system and --resample")


def run(args):
    if args.output:
        from ..sampling.streaming import TRAJECTORY_EXTENSIONS
        from ..utils import check_output_file

        check_output_file(args.output, "--output", TRAJECTORY_EXTENSIONS)  # before loading or computing anything
        return _run_to_file(args)
    import time

    import numpy as np

    from ..analysis.diagnostics import warning_lines
    from ..sampling.energies import ReducedPotential
    from ..sampling.importance import importance_sample
    from .common import load_model, print_warnings, target_for_model

    model = load_model(args)
    if args.no_weights:
        positions, log_q = model.sample(args.n, proposal_temperature=args.proposal_temperature, seed=args.seed)
        print(f"{len(positions)} samples, mean log q {np.mean(log_q):.2f}")
    else:
        ms, T = target_for_model(model, args)
        with ReducedPotential(ms.system, temperature=T, n_workers=args.workers) as u:
            t0 = time.time()
            result = importance_sample(model, u, args.n, proposal_temperature=args.proposal_temperature, seed=args.seed,
                                       progress=not args.quiet)
            print(f"{result.summary()}  [{time.time() - t0:.1f} s]")
        print_warnings(warning_lines(result))
        positions = result.resample(rng=args.seed) if args.resample else result.positions


def _run_to_file(args):
    """Samples streamed to ``--output`` in chunks (openmm_arbg.sampling.streaming.sample_to_file)."""
    import contextlib
    import sys
    import time

    import numpy as np

    from ..analysis.diagnostics import warning_lines
    from ..sampling.energies import ReducedPotential
    from ..sampling.streaming import RunInterrupted, sample_to_file
    from .common import load_model, print_warnings, target_for_model

    model = load_model(args)
    if args.no_weights:
        u = contextlib.nullcontext(None)
    else:
        ms, T = target_for_model(model, args)
        u = ReducedPotential(ms.system, temperature=T, n_workers=args.workers)
    t0 = time.time()
    try:
        with u:
            result, written, store = sample_to_file(
                model, args.output, args.n, reduced_potential=u if not args.no_weights else None,
                proposal_temperature=args.proposal_temperature, seed=args.seed, chunk_size=args.chunk_size, resample=args.resample,
                progress=not args.quiet,
            )
    except RunInterrupted as stopped:
        print(f"arbg sample: {stopped}", file=sys.stderr)
        raise SystemExit(130)
    if result is None:
        print(f"{len(written)} samples, mean log q {np.mean(store.load_result()['log_q']):.2f}")
    else:
        print(f"{result.summary()}  [{time.time() - t0:.1f} s]")
        print_warnings(warning_lines(result))
    what = "resampled (Boltzmann-distributed) frames" if args.resample else "proposals"
    print(f"{what} -> {args.output} (every proposal's log q, reduced potential and log weight: {store.folder}/result.npz)")
