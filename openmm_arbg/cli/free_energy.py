"""Populations and free energies of conformational states, from a chain (MD or MCMC trajectory)
or by importance sampling with a model (arbg free-energy): states given with --state
(openmm_arbg.analysis.states), or alanine dipeptide's basins by default
(openmm_arbg.analysis.free_energy.alanine_dipeptide_analysis)."""

import math

from .common import add_options, positive_int

NAME = "free-energy"
HELP = "state populations and free energies from a trajectory or by importance sampling"


def add_arguments(p):
    p.add_argument("--trajectory", help="MD or MCMC trajectory (chain estimate)")
    p.add_argument("--topology", help="topology file of --trajectory")
    p.add_argument("--stride", type=positive_int, default=1, help="use every n-th frame of --trajectory (default %(default)s)")
    p.add_argument("--recycled", metavar="RESULT_NPZ",
                   help="the recycled proposals of arbg mcmc --recycle (OUTPUT.progress/result.npz), weighed as importance "
                   "sampling; with --topology")
    add_options(p, "model", "target", "temperature", model=dict(help="model file (importance-sampling estimate)"))
    p.add_argument("--n", type=positive_int, default=10000, help="proposals (default %(default)s)")
    p.add_argument(
        "--state", action="append", default=[], metavar="NAME=EXPRESSION",
        help="a state, e.g. 'alphaR=phi2 < 0 and -120 <= psi2 <= 50' (dihedrals phiK/psiK in degrees, K the "
        "residue's position; d(i, j) in nm); repeat for several. Default: alanine dipeptide's basins",
    )
    add_options(p, "workers", "seed", "device", "quiet")


def validate(args, parser):
    if sum(bool(v) for v in (args.trajectory, args.model, args.recycled)) != 1:
        parser.error("give one of --trajectory (with --topology) for a chain, --model (with --system) for importance sampling, "
                     "or --recycled (with --topology) for the recycled proposals of arbg mcmc --recycle")
    for state in args.state:
        name, sep, expression = state.partition("=")
        if not sep or not name.strip() or not expression.strip():
            parser.error(f"--state {state!r}: write NAME=EXPRESSION, e.g. 'alphaR=phi2 < 0 and -120 <= psi2 <= 50'")


def run(args):
    import os

    from ..analysis.diagnostics import warning_lines
    from ..analysis.free_energy import alanine_dipeptide_analysis
    from .common import print_warnings

    if args.trajectory:
        import mdtraj

        from ..training import load_trajectories

        if not args.topology or not os.path.isfile(args.topology):
            raise FileNotFoundError(f"topology file {args.topology} does not exist (--topology)")
        positions = load_trajectories([args.trajectory], args.topology, stride=args.stride)  # checked bond by bond
        topology, log_weights = mdtraj.load_topology(args.topology), None
        label = f"{len(positions)} frames of {args.trajectory} (errors: statistical inefficiency)"
    elif args.recycled:
        import mdtraj
        import numpy as np

        from ..arbg import as_positions_nm
        from ..molecule.topology import MolecularGraph
        from ..sampling.mcmc import ArBGMove

        if not args.topology or not os.path.isfile(args.topology):
            raise FileNotFoundError(f"topology file {args.topology} does not exist (--topology)")
        if not os.path.isfile(args.recycled):
            raise FileNotFoundError(f"--recycled {args.recycled} does not exist (arbg mcmc --recycle writes OUTPUT.progress/result.npz)")
        with np.load(args.recycled, allow_pickle=False) as z:
            if "recycled_valid" not in z.files:
                raise ValueError(f"--recycled {args.recycled} holds no recycled proposals: run arbg mcmc with --recycle")
            data = {k: z["recycled_" + k] for k in ("positions", "log_q", "reduced_potentials", "valid")}
        topology = mdtraj.load_topology(args.topology)
        graph = MolecularGraph.from_topology(topology)
        data["positions"] = as_positions_nm(data["positions"], graph.n_atoms, graph, "recycled positions")
        result = ArBGMove.recycled_result(data)
        print(result.summary())
        print_warnings(warning_lines(result))
        positions, log_weights = result.positions, result.log_weights
        label = f"{result.n} recycled proposals of an ArBGMove chain (errors: bootstrap)"
    else:
        from ..sampling.energies import ReducedPotential
        from ..sampling.importance import importance_sample
        from .common import load_model, target_for_model

        model = load_model(args)
        ms, T = target_for_model(model, args)
        with ReducedPotential(ms.system, temperature=T, n_workers=args.workers) as u:
            result = importance_sample(model, u, args.n, seed=args.seed, progress=not args.quiet)
        print(result.summary())
        print_warnings(warning_lines(result))
        positions, topology, log_weights = result.positions, model.topology, result.log_weights
        label = f"importance sampling, {args.n} proposals (errors: bootstrap)"
    if args.state:
        from ..analysis.states import state_populations

        states = dict((part.strip() for part in s.partition("=")[::2]) for s in args.state)
        result = state_populations(states, positions, topology, log_weights, rng=args.seed)
        print(f"states, {label}:")
        for name, r in result.items():
            p, dp = r["population"], r["population_error"]
            if p > 0 and math.isfinite(r["free_energy_error"]):
                f = f"-ln P = {r['free_energy']:.3f} +- {r['free_energy_error']:.3f} kT"
            elif p > 0:  # the delta method's dP/P means nothing when the error of P reaches P
                f = f"-ln P = {r['free_energy']:.3f} kT, error undetermined (the error of P reaches P)"
            else:
                f = "-ln P = inf kT (never visited)"
            print(f"  P({name}) = {100 * p:.2f} +- {100 * dp:.2f} %   {f}   ({states[name]})")
        return
    analysis = alanine_dipeptide_analysis(positions, topology, log_weights, rng=args.seed)
    print(f"alanine dipeptide basins, {label}:")
    for name, (p, dp) in analysis["populations"].items():
        print(f"  P({name}) = {100 * p:.2f} +- {100 * dp:.2f} %")
    for name, (f, df) in analysis["free_energies"].items():
        print(f"  {name} = {f:.3f} +- {df:.3f} kT")
