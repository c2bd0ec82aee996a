"""A chain of ArBGMove (+ Langevin) in an openmmtools MCMCSampler, written as a trajectory
(arbg mcmc; openmm_arbg.sampling.chain.run_chain)."""

import sys

from .common import add_options, non_negative_int, positive_int

NAME = "mcmc"
HELP = "sample a system with ArBGMove (+ Langevin) in an openmmtools MCMCSampler"
REQUIRED = ("model",)


def add_arguments(p):
    add_options(p, "model", "device", "target", "temperature")
    p.add_argument("--iterations", type=positive_int, default=1000, help="chain iterations, each Langevin steps then ArBG attempts (default %(default)s)")
    p.add_argument("--attempts", type=positive_int, default=10, help="ArBG Metropolis-Hastings attempts per iteration (default %(default)s)")
    p.add_argument("--langevin-steps", type=non_negative_int, default=100, help="Langevin steps per iteration, before the attempts (0: ArBG moves only; default %(default)s)")
    p.add_argument("--collision-rate-per-ps", type=float, default=1.0, help="Langevin collision rate (default %(default)s)")
    add_options(p, "timestep_fs", "proposal_temperature", "platform", "seed", "workers",
                seed=dict(help="seeds numpy's global generator, openmmtools' convention (default %(default)s)"),
                workers=dict(default=1, help="processes for the energies of each iteration's attempts; the chain is the "
                             "same for any number (default %(default)s)"))
    p.add_argument("--cuts", type=int, nargs="+",
                   help="partial resampling: each attempt keeps the first K model coordinates, K drawn from these "
                   "(0 redraws the whole molecule), and redraws the rest from the model's exact conditional (default: 0 only)")
    p.add_argument("--cut-probabilities", type=float, nargs="+", help="probability of each --cuts value (default uniform)")
    p.add_argument("--recycle", action="store_true",
                   help="keep every whole-molecule proposal, accepted or not, with its importance weight (waste recycling): "
                   "estimates from all the energies the chain computed, kept in OUTPUT.progress/result.npz for "
                   "arbg free-energy --recycled")
    p.add_argument("--storage", metavar="FILE.nc",
                   help="run the chain in openmmtools' MultiStateSampler with its netCDF storage (MultiStateReporter) "
                   "instead of --output; the same command resumes from the last checkpoint, a larger --iterations extends it")
    p.add_argument("--output", default="arbg_mcmc.dcd",
                   help="trajectory file of the chain (default %(default)s); chunks are saved in OUTPUT.progress/ as the chain "
                   "runs, and the same command resumes an interrupted chain")
    p.add_argument("--chunk-iterations", type=positive_int, default=100,
                   help="iterations per saved chunk: what an interruption can lose, and the unit of reseeding (default %(default)s)")
    add_options(p, "quiet")


def validate(args, parser):
    if args.cut_probabilities is not None and (args.cuts is None or len(args.cuts) != len(args.cut_probabilities)):
        parser.error("--cut-probabilities needs one probability per --cuts value")


def _run_storage(args):
    """arbg mcmc --storage: openmmtools' sampler and storage."""
    from openmmtools.states import ThermodynamicState
    import openmm.unit as unit

    from ..sampling.chain import run_chain_storage
    from .common import load_model, target_for_model

    model = load_model(args)
    ms, T = target_for_model(model, args)
    sampler = run_chain_storage(
        args.model, ThermodynamicState(ms.system, T * unit.kelvin), ms.positions, args.iterations, args.storage,
        n_attempts=args.attempts, langevin_steps=args.langevin_steps, proposal_temperature=args.proposal_temperature,
        timestep_fs=args.timestep_fs, collision_rate_per_ps=args.collision_rate_per_ps, platform=args.platform,
        checkpoint_interval=args.chunk_iterations, cuts=args.cuts, cut_probabilities=args.cut_probabilities, seed=args.seed,
        n_workers=args.workers,
    )
    move = sampler.mcmc_moves[0].move_list[-1]
    print(f"{sampler.iteration} iterations in {args.storage} (openmmtools MultiStateReporter); ArBGMove acceptance "
          f"{100 * move.acceptance_rate:.2f} % ({move.n_accepted} of {move.n_proposed})")
    from ..analysis.diagnostics import warning_lines
    from .common import print_warnings

    if move.n_proposed:
        print_warnings(warning_lines(dict(acceptance_rate=move.acceptance_rate)))


def run(args):
    from ..sampling.streaming import TRAJECTORY_EXTENSIONS
    from ..utils import check_output_file

    if args.storage:
        if args.recycle:
            raise ValueError("--recycle keeps proposals in the --output chunks; it does not work with --storage")
        if args.device != "cpu":
            raise ValueError("--storage restores the move's model from its file on the CPU; use --output for a chain "
                             f"with the network on {args.device}")
        if not args.storage.endswith(".nc"):
            raise ValueError(f"--storage {args.storage}: give a netCDF file name ending in .nc")
        check_output_file(args.storage, "--storage", (".nc",))
        return _run_storage(args)

    check_output_file(args.output, "--output", TRAJECTORY_EXTENSIONS)  # before loading or computing anything
    from openmmtools.states import ThermodynamicState
    import openmm.unit as unit

    from ..analysis.diagnostics import warning_lines
    from ..sampling.chain import run_chain
    from ..sampling.streaming import RunInterrupted
    from .common import load_model, print_warnings, target_for_model

    model = load_model(args)
    ms, T = target_for_model(model, args)
    try:
        chain = run_chain(
            model, ThermodynamicState(ms.system, T * unit.kelvin), ms.positions, args.iterations, n_attempts=args.attempts,
            langevin_steps=args.langevin_steps, proposal_temperature=args.proposal_temperature, timestep_fs=args.timestep_fs,
            collision_rate_per_ps=args.collision_rate_per_ps, platform=args.platform, seed=args.seed, progress=not args.quiet,
            output=args.output, chunk_iterations=args.chunk_iterations, topology=ms.topology,
            cuts=args.cuts, cut_probabilities=args.cut_probabilities, recycle=args.recycle, n_workers=args.workers,
        )
    except RunInterrupted as stopped:
        print(f"arbg mcmc: {stopped}", file=sys.stderr)
        raise SystemExit(130)
    print(f"{chain.summary()}; trajectory -> {args.output}")
    print_warnings(warning_lines(chain))
    if chain.recycled is not None:
        import os

        recycled = chain.recycled_result
        print(f"recycled whole-molecule proposals (importance weights, no extra energies): {recycled.summary()}")
        print_warnings(warning_lines(recycled))
        path = os.path.join(args.output + ".progress", "result.npz")
        print(f"recycled proposals -> {path} (arbg free-energy --recycled {path} --topology TOPOLOGY)")
