"""Sequential Monte Carlo over partial structures (arbg smc): particles are grown by the model
coordinate by coordinate, reweighted at the --stages cuts by the tempered energy of the atoms
placed so far, resampled when their ESS drops, and weighted exactly against the target at the
end (openmm_arbg.sampling.smc.smc_sample). Prints log Z(target) - log Z(model), the final ESS and
the energy evaluations (partial ones counted); with --repeats the spread of log Z over
independent runs is its error. --output writes the particles and their weights (npz).
With --betas it runs annealed SMC instead: whole model proposals tempered towards the target
through the given inverse-temperature factors, with Metropolis-Hastings moves between stages
(openmm_arbg.sampling.annealed.annealed_smc)."""

from .common import add_options, positive_int

NAME = "smc"
HELP = "sequential Monte Carlo over partial structures: log Z and weighted particles"
REQUIRED = ("model",)


def add_arguments(p):
    add_options(p, "model", "device", "target", "temperature", "proposal_temperature")
    p.add_argument("--n", type=positive_int, default=2000, help="particles per run (default %(default)s)")
    p.add_argument("--stages", type=int, nargs="+", required=False,
                   help="model-coordinate cuts where particles are reweighted, increasing, in (0, number of coordinates) "
                   "(default: one stage at five sixths of the coordinates)")
    p.add_argument("--lambdas", type=float, nargs="+", help="inverse-temperature factor of each stage's partial energy (default 0.3 each)")
    p.add_argument("--betas", type=float, nargs="+",
                   help="annealed SMC instead of partial structures: increasing inverse-temperature factors in (0, 1) of "
                   "the path q^(1-b) exp(-b u) from the model to the target (the last stage is b = 1)")
    p.add_argument("--kernel", choices=("independence", "random-walk"),
                   help="with --betas: Metropolis-Hastings moves by fresh model proposals, or by a Cartesian random walk "
                   "(default independence)")
    p.add_argument("--mcmc-steps", type=int, help="with --betas: moves per particle after each stage (default 1)")
    p.add_argument("--step-nm", type=float,
                   help="with --kernel random-walk: standard deviation per atom and direction, nm (default 0.0005: about "
                   "half the moves of alanine dipeptide are accepted; 0.002 gives about 1 percent)")
    p.add_argument("--ess-threshold", type=float, default=0.5, help="resample when ESS < this fraction of --n (default %(default)s)")
    p.add_argument("--repeats", type=positive_int, default=1, help="independent runs; their spread is the error of log Z (default %(default)s)")
    p.add_argument("--output", help="write the particles, log weights and log Z of every run to this .npz file")
    add_options(p, "workers", "seed", workers=dict(default=1))


def validate(args, parser):
    if not 0 < args.ess_threshold <= 1:
        parser.error(f"--ess-threshold must be in (0, 1]; got {args.ess_threshold}")
    if args.betas is None:
        given = [o for o, v in (("--kernel", args.kernel), ("--mcmc-steps", args.mcmc_steps), ("--step-nm", args.step_nm)) if v is not None]
        if given:
            parser.error(f"{', '.join(given)} set the moves of annealed SMC: add --betas, or leave them out")
    else:
        if args.stages is not None or args.lambdas is not None:
            parser.error("--betas (annealed SMC) and --stages/--lambdas (SMC over partial structures) exclude each other: choose one")
        if any(not 0 < b < 1 for b in args.betas) or args.betas != sorted(set(args.betas)):
            parser.error(f"--betas must be increasing values in (0, 1) (the last stage, b = 1, is always run: leave it out); "
                         f"got {args.betas}")
        args.kernel = args.kernel or "independence"
        args.mcmc_steps = 1 if args.mcmc_steps is None else args.mcmc_steps
        if args.mcmc_steps < 0:
            parser.error(f"--mcmc-steps must be an integer >= 0; got {args.mcmc_steps}")
        if args.step_nm is not None and args.kernel != "random-walk":
            parser.error("--step-nm is the random walk's step: add --kernel random-walk, or leave it out")
        args.step_nm = 0.0005 if args.step_nm is None else args.step_nm
        if not args.step_nm > 0:
            parser.error(f"--step-nm must be positive (nm); got {args.step_nm}")
    if args.stages is not None and (any(c < 1 for c in args.stages) or args.stages != sorted(set(args.stages))):
        parser.error(f"--stages must be increasing model-coordinate cuts >= 1 (and below the model's number of coordinates); got {args.stages}")
    if args.lambdas is not None:
        if args.stages is None or len(args.lambdas) != len(args.stages):
            parser.error("--lambdas needs one value per --stages cut")
        if any(not v >= 0 for v in args.lambdas):
            parser.error(f"--lambdas must be >= 0; got {args.lambdas}")
    if args.output and not args.output.endswith(".npz"):
        parser.error(f"--output {args.output}: give a .npz file name")


def run(args):
    import time

    import numpy as np

    from ..sampling.energies import ReducedPotential
    from ..sampling.importance import effective_sample_size
    from ..sampling.annealed import annealed_smc
    from ..sampling.smc import smc_sample
    from ..utils import atomic_write, check_output_file
    from .common import load_model, target_for_model

    if args.output:
        check_output_file(args.output, "--output", (".npz",))  # before any computing
    model = load_model(args)
    stages = [] if args.betas else args.stages or [int(round(5 * model.n_coords / 6))]
    lambdas = [] if args.betas else args.lambdas or [0.3] * len(stages)
    ms, T = target_for_model(model, args)
    runs = []
    with ReducedPotential(ms.system, temperature=T, n_workers=args.workers) as u:
        for r in range(args.repeats):
            start = time.perf_counter()
            seed = None if args.seed is None else args.seed + r
            if args.betas:
                res = annealed_smc(model, u, args.n, args.betas, kernel=args.kernel, n_steps=args.mcmc_steps,
                                   step_nm=args.step_nm, ess_threshold=args.ess_threshold, seed=seed)
                moves = ", acceptance " + " ".join(f"{100 * a:.1f}" for a in res.acceptance) + " %"
            else:
                res = smc_sample(model, u, args.n, stages=stages, lambdas=lambdas, ess_threshold=args.ess_threshold,
                                 proposal_temperature=args.proposal_temperature, seed=seed)
                moves = ""
            ess = effective_sample_size(res.log_weights)
            if args.betas and args.mcmc_steps and min(res.acceptance) < 0.02:
                print(f"warning: run {r}: the {args.kernel} moves were accepted {100 * min(res.acceptance):.1f} % of the "
                      "time at some stage: they hardly move the particles"
                      + ("; try a smaller --step-nm" if args.kernel == "random-walk" else "; try more --betas stages"))
            print(f"run {r}: log Z(target) - log Z(model) = {res.log_z:.3f}, final ESS/N {100 * ess / args.n:.2f} %, "
                  f"{res.n_resamplings} resampling(s){moves}, {res.n_evaluations} energy evaluations, "
                  f"{time.perf_counter() - start:.1f} s")
            runs.append(res)
    log_z = np.array([r.log_z for r in runs])
    if len(runs) > 1:
        print(f"log Z over {len(runs)} runs: {log_z.mean():.3f} +- {log_z.std(ddof=1) / np.sqrt(len(runs)):.3f} "
              f"(sd of one run {log_z.std(ddof=1):.3f}; SMC is unbiased in Z, its mean log Z is low by about var/2)")
    if args.output:
        with atomic_write(args.output, "wb") as fh:
            np.savez(fh, positions=np.stack([r.positions for r in runs]), log_weights=np.stack([r.log_weights for r in runs]),
                     log_z=log_z, n_evaluations=np.array([r.n_evaluations for r in runs]), stages=np.array(stages),
                     lambdas=np.array(lambdas), betas=np.array(args.betas or []), temperature_K=T)
        print(f"-> {args.output} (positions in nm, (runs, particles, atoms, 3); log weights per run)")
