"""Draw conformations from a model; importance weights, ESS and a resampled
(Boltzmann-distributed) population against the target system (arbg sample;
openmm_arbg.sampling.importance.importance_sample)."""

from .common import add_options

NAME = "sample"
HELP = "draw conformations; importance weights and ESS against the target system"
REQUIRED = ("model",)


def add_arguments(p):
    add_options(p, "model")
    p.add_argument("--n", type=int, default=1000, help="number of proposals (default %(default)s)")
    add_options(p, "target", "temperature", "proposal_temperature", "workers", workers=dict(default=1))
    p.add_argument("--no-weights", action="store_true", help="only draw conformations: no target, no energies, no weights")
    p.add_argument("--resample", action="store_true", help="write a resampled (Boltzmann-distributed) population")
    p.add_argument("--output", help="write samples to this trajectory file (e.g. samples.dcd)")
    add_options(p, "seed", seed=dict(default=None, help="random seed (default: none)"))


def validate(args, parser):
    if args.no_weights and (args.system or args.resample):
        parser.error("--no-weights draws without a target: leave out --system and --resample")


def run(args):
    import time

    import numpy as np

    from ..analysis.diagnostics import warning_lines
    from ..arbg import ArBG
    from ..sampling.energies import ReducedPotential
    from ..sampling.importance import importance_sample
    from ..utils import atomic_write
    from .common import print_warnings, target_for_model

    model = ArBG.load(args.model)
    if args.no_weights:
        positions, log_q = model.sample(args.n, proposal_temperature=args.proposal_temperature, seed=args.seed)
        print(f"{len(positions)} samples, mean log q {np.mean(log_q):.2f}")
    else:
        ms, T = target_for_model(model, args)
        with ReducedPotential(ms.system, temperature=T, n_workers=args.workers) as u:
            t0 = time.time()
            result = importance_sample(model, u, args.n, proposal_temperature=args.proposal_temperature, seed=args.seed)
            print(f"{result.summary()}  [{time.time() - t0:.1f} s]")
        print_warnings(warning_lines(result))
        positions = result.resample(rng=args.seed) if args.resample else result.positions
    if args.output:
        import mdtraj

        with atomic_write(args.output, mode=None) as tmp:
            mdtraj.Trajectory(positions.astype("float32"), model.topology).save(tmp)
        print(f"samples -> {args.output}")
