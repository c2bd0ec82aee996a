"""Populations and free energies of conformational states, from a chain (MD or MCMC trajectory)
or by importance sampling with a model (arbg free-energy): states given with --state
(openmm_arbg.analysis.states), states found in MD with --discover N (TICA + k-means + PCCA+,
openmm_arbg.analysis.state_discovery) or read with --states-file, or alanine dipeptide's basins by
default (openmm_arbg.analysis.free_energy.alanine_dipeptide_analysis)."""

from .common import add_options, check_state_options, merge_states, positive_int, user_states

NAME = "free-energy"
HELP = "state populations and free energies from a trajectory or by importance sampling"


def add_arguments(p):
    p.add_argument("--trajectory", nargs="+", metavar="TRAJ",
                   help="MD or MCMC trajectory (chain estimate); several are independent runs (MD replicas), pooled, each "
                   "run's correlation time entering the errors")
    p.add_argument("--topology", help="topology file of --trajectory (default: topology.pdb beside it)")
    p.add_argument("--stride", type=positive_int, default=1, help="use every n-th frame of --trajectory (default %(default)s)")
    p.add_argument("--recycled", metavar="RESULT_NPZ",
                   help="the recycled proposals of arbg mcmc --recycle (OUTPUT.progress/result.npz), weighed as importance "
                   "sampling; with --topology")
    add_options(p, "model", "target", "temperature", model=dict(help="model file (importance-sampling estimate)"))
    p.add_argument("--n", type=positive_int, default=10000, help="proposals (default %(default)s)")
    p.add_argument(
        "--state", action="append", default=[], metavar="NAME=EXPRESSION",
        help="a state, e.g. 'alphaR=phi2 < 0 and -120 <= psi2 <= 50' (dihedrals phiK/psiK and side chains' chiN_K in degrees, K "
        "the residue's position; d(i, j) in nm); repeat for several. Default: alanine dipeptide's basins",
    )
    p.add_argument("--discover", type=positive_int, metavar="N",
                   help="find N metastable states automatically in MD (TICA of the backbone dihedrals, k-means, PCCA+ "
                   "of a Markov model; deeptime): on --trajectory, or on --discover-from")
    p.add_argument("--discover-from", nargs="+", metavar="TRAJ",
                   help="MD trajectories to find the --discover states on (their topology: --topology, or the topology.pdb beside "
                        "the first); default --trajectory. "
                   "Needed with --model or --recycled")
    p.add_argument("--discover-method", choices=("pcca", "kmeans"), default="pcca",
                   help="pcca: metastable sets of a Markov model of k-means microstates (kinetic); kmeans: N k-means "
                   "clusters of TICA space (geometric) (default %(default)s)")
    p.add_argument("--lag", type=positive_int, help="TICA and Markov-model lag of --discover, in frames of the MD "
                   "(default 100, or a tenth of the longest trajectory)")
    p.add_argument("--save-states", metavar="FILE.json", help="write the --discover states (JSON) to reuse them with --states-file")
    p.add_argument("--states-file", metavar="FILE.json", help="states written by --save-states (the same states for "
                   "importance sampling, chains and recycled proposals)")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the states' free energies with error bars "
                   "(and, with --discover, the MD frames in TICA space coloured by state)")
    add_options(p, "workers", "seed", "device", "quiet")


def validate(args, parser):
    if sum(bool(v) for v in (args.trajectory, args.model, args.recycled)) != 1:
        parser.error("give one of --trajectory (with --topology) for a chain, --model (with --system) for importance sampling, "
                     "or --recycled (with --topology) for the recycled proposals of arbg mcmc --recycle")
    check_state_options(args, parser)
    if args.discover and args.states_file:
        parser.error("give --discover N (find states now) or --states-file (states found before), not both")
    if args.discover and not (args.trajectory or args.discover_from):
        parser.error("--discover finds states in MD: give --discover-from TRAJ (with --topology) beside --model or --recycled")
    if args.discover_from and not args.discover:
        parser.error("--discover-from is the MD that --discover N finds states on: give --discover N too")
    for option in ("save_states", "lag"):
        if getattr(args, option) and not args.discover:
            parser.error(f"--{option.replace('_', '-')} belongs to --discover N")
    if args.discover_method != "pcca" and not args.discover:
        parser.error("--discover-method belongs to --discover N")
    if args.plot and not (args.state or args.discover or args.states_file):
        parser.error("--plot draws the free energies of states: give --state, --discover or --states-file")


def run(args):
    """Check the states against the molecule first (a typo costs no sampling), then compute the
    frames and weights of the chosen source and report the states' populations."""
    from ..analysis.diagnostics import warning_lines
    from ..analysis.free_energy import alanine_dipeptide_analysis
    from .common import load_model, print_warnings, topology_file

    model = None
    if args.trajectory or args.recycled:
        import os

        import mdtraj

        if args.recycled and not args.topology:
            raise FileNotFoundError("--recycled needs --topology, the topology file of the chain's system (arbg mcmc wrote "
                                    "no topology beside its result)")
        args.topology = topology_file(args.topology, args.trajectory[0] if args.trajectory else args.recycled)
        if args.recycled and not os.path.isfile(args.recycled):
            raise FileNotFoundError(f"--recycled {args.recycled} does not exist (arbg mcmc --recycle writes OUTPUT.progress/result.npz)")
        topology = mdtraj.load_topology(args.topology)
    else:
        model = load_model(args)
        topology = model.topology
    states, discovered, fit = _states(args, topology)
    if not states:
        from ..analysis.observables import backbone_dihedral_indices

        if sum(len(i) for i in backbone_dihedral_indices(topology)) != 2:
            raise ValueError("without --state, arbg free-energy reports alanine dipeptide's basins; this molecule is not alanine "
                             "dipeptide: define states with --state NAME=EXPRESSION (e.g. 'alpha2=phi2 < 0 and -120 < psi2 < 50') "
                             "or find them in MD with --discover N")

    run_lengths = None  # a chain of several independent runs: their lengths
    if args.trajectory:
        from ..training import load_trajectories

        positions, run_lengths = load_trajectories(args.trajectory, args.topology, stride=args.stride,
                                                   return_lengths=True)  # checked bond by bond
        log_weights = None
        runs = f"{len(run_lengths)} runs ({', '.join(map(str, run_lengths))} frames)" if len(run_lengths) > 1 else args.trajectory[0]
        label = f"{len(positions)} frames of {runs} (errors: statistical inefficiency)"
    elif args.recycled:
        import numpy as np

        from ..arbg import as_positions_nm
        from ..molecule.topology import MolecularGraph
        from ..sampling.mcmc import ArBGMove

        with np.load(args.recycled, allow_pickle=False) as z:
            if "recycled_valid" not in z.files:
                raise ValueError(f"--recycled {args.recycled} holds no recycled proposals: run arbg mcmc with --recycle")
            data = {k: z["recycled_" + k] for k in ("positions", "log_q", "reduced_potentials", "valid")}
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
        from .common import target_for_model

        ms, T = target_for_model(model, args)
        with ReducedPotential(ms.system, temperature=T, n_workers=args.workers) as u:
            result = importance_sample(model, u, args.n, seed=args.seed, progress=not args.quiet)
        print(result.summary())
        print_warnings(warning_lines(result))
        positions, log_weights = result.positions, result.log_weights
        label = f"importance sampling, {args.n} proposals (errors: bootstrap)"

    if states:
        from ..analysis.state_discovery import describe_results, state_free_energy_plot
        from ..analysis.states import state_populations

        result = state_populations(states, positions, topology, log_weights, rng=args.seed, run_lengths=run_lengths)
        print(f"states, {label}:")
        for line in describe_results(result, states):
            print(line)
        if args.plot:
            points, labels = fit if fit is not None else (None, None)
            state_free_energy_plot(result, args.plot, title=f"state free energies: {label.split(' (')[0]}", discovered=discovered,
                                   tica_points=points, tica_labels=labels)
            print(f"plot: {args.plot}")
        return
    analysis = alanine_dipeptide_analysis(positions, topology, log_weights, rng=args.seed, run_lengths=run_lengths)
    print(f"alanine dipeptide basins, {label}:")
    for name, (p, dp) in analysis["populations"].items():
        print(f"  P({name}) = {100 * p:.2f} +- {100 * dp:.2f} %")
    for name, (f, df) in analysis["free_energies"].items():
        print(f"  {name} = {f:.3f} +- {df:.3f} kT")


def _states(args, topology):
    """(name -> expression or callable, DiscoveredStates or None, (TICA points, labels) of the
    fitting MD or None) from --state, --states-file or --discover."""
    states, discovered = user_states(args, topology)
    if discovered is not None:
        print(discovered.summary().replace(" found by", f" read from {args.states_file}, found by", 1))
    if not args.discover:
        return states, discovered, None
    import numpy as np

    from ..analysis.state_discovery import discover_states
    from ..training import load_trajectories
    from .common import topology_file

    files = args.discover_from or args.trajectory
    frames, lengths = load_trajectories(files, topology_file(args.topology, files[0]), stride=args.stride,
                                        return_lengths=True)
    runs = np.split(frames, np.cumsum(lengths)[:-1])
    discovered = discover_states(runs, topology, n_states=args.discover, lag=args.lag, method=args.discover_method,
                                 seed=args.seed or 0)
    print(discovered.summary())
    if args.save_states:
        discovered.save(args.save_states)
        print(f"states saved: {args.save_states} (reuse with --states-file)")
    else:
        print("(save these states with --save-states FILE.json to reuse them with --states-file)")
    fit = None
    if args.plot:
        y = discovered.tica(frames[:: max(1, len(frames) // 20000)])
        fit = (y, discovered.assign_tica(y))
    return merge_states(states, discovered), discovered, fit
