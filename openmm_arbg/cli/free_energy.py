"""Alanine dipeptide basin populations and free energies, from a chain (MD or MCMC trajectory)
or by importance sampling with a model (arbg free-energy;
openmm_arbg.analysis.free_energy.alanine_dipeptide_analysis)."""

from .common import add_options

NAME = "free-energy"
HELP = "alanine dipeptide basin free energies from a trajectory or by importance sampling"


def add_arguments(p):
    p.add_argument("--trajectory", help="MD or MCMC trajectory (chain estimate)")
    p.add_argument("--topology", help="topology file of --trajectory")
    p.add_argument("--stride", type=int, default=1, help="use every n-th frame of --trajectory (default %(default)s)")
    add_options(p, "model", "target", "temperature", model=dict(help="model file (importance-sampling estimate)"))
    p.add_argument("--n", type=int, default=10000, help="proposals (default %(default)s)")
    add_options(p, "workers", "seed")


def validate(args, parser):
    if bool(args.trajectory) == bool(args.model):
        parser.error("give either --trajectory (with --topology) for a chain, or --model (with --system) for importance sampling")


def run(args):
    import os

    from ..analysis.diagnostics import warning_lines
    from ..analysis.free_energy import alanine_dipeptide_analysis
    from .common import print_warnings

    if args.trajectory:
        import mdtraj

        if not args.topology or not os.path.isfile(args.topology):
            raise FileNotFoundError(f"topology file {args.topology} does not exist (--topology)")
        traj = mdtraj.load(args.trajectory, top=args.topology, stride=args.stride)
        analysis = alanine_dipeptide_analysis(traj.xyz, traj.topology)
        label = f"{traj.n_frames} frames of {args.trajectory} (errors: statistical inefficiency)"
    else:
        from ..arbg import ArBG
        from ..sampling.energies import ReducedPotential
        from ..sampling.importance import importance_sample
        from .common import target_for_model

        model = ArBG.load(args.model)
        ms, T = target_for_model(model, args)
        with ReducedPotential(ms.system, temperature=T, n_workers=args.workers) as u:
            result = importance_sample(model, u, args.n, seed=args.seed)
        print(result.summary())
        print_warnings(warning_lines(result))
        analysis = alanine_dipeptide_analysis(result.positions, model.topology, result.log_weights, rng=args.seed)
        label = f"importance sampling, {args.n} proposals (errors: bootstrap)"
    print(f"alanine dipeptide basins, {label}:")
    for name, (p, dp) in analysis["populations"].items():
        print(f"  P({name}) = {100 * p:.2f} +- {100 * dp:.2f} %")
    for name, (f, df) in analysis["free_energies"].items():
        print(f"  {name} = {f:.3f} +- {df:.3f} kT")
