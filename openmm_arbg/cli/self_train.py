"""Self-train an ArBG by importance sampling, optionally annealing from a higher temperature
(arbg self-train; openmm_arbg.training.SelfTrainer).

Starts from a model trained on MD (arbg train), for example on short MD at the target
temperature and at a high temperature where the molecule crosses its barriers. Each round draws
fresh proposals, weights them exactly with OpenMM energies at the round's temperature and trains
on the weighted proposals of the last rounds and on the MD frames (reweighted to that
temperature). Writes model.safetensors (the starting model, or the round with the best ESS/N among
those whose weights have Pareto k < 0.5 at the target temperature), last.safetensors,
learning_curve.csv and .png, and a resumable checkpoint: the same command continues a stopped run.
The settings are the fields of SelfTrainingConfig (openmm_arbg.training.self_training).
"""

from .common import add_dataclass_options, add_options, dataclass_values, positive_int

NAME = "self-train"
HELP = "self-train a model by importance sampling (and temperature annealing) to find what the MD missed"
REQUIRED = ("model",)


def _config_class():
    from ..training import SelfTrainingConfig

    return SelfTrainingConfig


def add_arguments(p):
    add_options(p, "model", "target", model=dict(help="starting model (model.safetensors of arbg train, or a shipped name)"))
    p.add_argument("--trajectories", nargs="+", default=[], help="MD trajectories to train on as well (optional)")
    p.add_argument("--trajectory-temperatures", nargs="+", type=float, default=[], metavar="K",
                   help="the temperature of each trajectory in K, one per trajectory (default: what the settings.json "
                        "of arbg md beside each trajectory says)")
    p.add_argument("--topology", help="topology of the trajectories (default: topology.pdb beside the first one)")
    p.add_argument("--stride", type=positive_int, default=1, help="use every n-th MD frame (default %(default)s)")
    p.add_argument(
        "--state", action="append", default=[], metavar="NAME=EXPRESSION",
        help="a state whose population the learning curve follows, e.g. 'C7ax=phi > 0' (repeatable; "
        "default for alanine dipeptide: C7ax=phi > 0)",
    )
    p.add_argument("--output", default="arbg_self_training", help="output folder (default %(default)s)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    add_options(p, "workers", "platform", "device", "quiet", workers=dict(default=1))
    add_dataclass_options(p, (_config_class(),))
    for action in p._actions:
        if action.dest == "temperature":
            action.help = "target temperature in K (default: the system's, 300 K for alanine dipeptide, 310 K for peptides)"


def validate(args, parser):
    try:
        dataclass_values(_config_class(), args)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if args.trajectories and not args.trajectory_temperatures:  # arbg md wrote each run's temperature beside it
        from ..simulation.md import md_provenance

        known = [md_provenance(path) for path in args.trajectories]
        unknown = [path for path, p in zip(args.trajectories, known) if p is None]
        if unknown:
            parser.error(f"give the temperature of each trajectory with --trajectory-temperatures K [K ...]: {unknown[0]} "
                         "has no settings.json of arbg md beside it that says it")
        args.trajectory_temperatures = [p["temperature_K"] for p in known]
    if len(args.trajectory_temperatures) != len(args.trajectories):
        parser.error(f"give one --trajectory-temperatures value per trajectory: {len(args.trajectories)} trajectories, "
                     f"{len(args.trajectory_temperatures)} temperatures")
    for t in args.trajectory_temperatures:
        if not t > 0:
            parser.error(f"--trajectory-temperatures must be positive (K); got {t}")
    for s in args.state:
        if "=" not in s or not s.partition("=")[0].strip() or not s.partition("=")[2].strip():
            parser.error(f"--state must be NAME=EXPRESSION, e.g. 'C7ax=phi > 0'; got {s!r}")


def md_energy_evaluations(trajectory):
    """Energy evaluations of an ``arbg md`` run (its settings.json beside the trajectory: steps
    plus equilibration), or None if the file does not say."""
    from ..simulation.md import md_settings

    s = md_settings(trajectory)
    try:
        return int(s["n_steps"]) + int(s.get("equilibration_steps", 0))
    except (ValueError, KeyError, TypeError):
        return None


def run(args):
    import mdtraj

    from ..molecule.topology import MolecularGraph
    from ..training import SelfTrainer, load_trajectories
    from .common import load_model, restart_or_resume, system_for_model, temperature_K, topology_file

    model = load_model(args)
    ms = system_for_model(model, args.system)
    if args.temperature is None:  # the system's temperature (310 K for peptides), as in every other command
        args.temperature = temperature_K(args, ms)
    config = dataclass_values(_config_class(), args)
    md, md_evaluations, unknown = [], 0, []
    if args.trajectories:
        topology = topology_file(args.topology, args.trajectories[0])
        top = mdtraj.load_topology(topology)
        model.check_topology(top)
        graph = MolecularGraph.from_topology(top)
        for path, temperature in zip(args.trajectories, args.trajectory_temperatures):
            md.append((load_trajectories([path], topology, stride=args.stride, graph=graph), temperature))
            n = md_energy_evaluations(path)
            if n is None:
                unknown.append(path)
            else:
                md_evaluations += n
    states = dict((part.strip() for part in s.partition("=")[::2]) for s in args.state)
    if not states and ms.name == "alanine_dipeptide_vacuum":
        states = {"C7ax": "phi > 0"}
    restart_or_resume(args.output, args.restart,
                      ("model.safetensors", "last.safetensors", "learning_curve.csv", "learning_curve.png"))
    if unknown:
        print(f"the MD's cost is not known for {', '.join(unknown)} (no arbg md settings.json beside it); "
              "the energy evaluations reported leave it out")
    trainer = SelfTrainer(model, ms.system, config, md=md, states=states, md_evaluations=md_evaluations, output_dir=args.output,
                          platform=args.platform, n_workers=args.workers, progress=not args.quiet)
    history = trainer.fit()
    if trainer.interrupted:
        print(f"{trainer.interrupted} after round {trainer.round - 1}: checkpoint written to {trainer.checkpoint_path}")
        raise KeyboardInterrupt
    last = history[-1]
    print(f"final model: ESS/N {100 * last['ess_fraction']:.2f} % at {last['temperature_K']:g} K "
          f"({config.n_proposals} fresh proposals); {last['energy_evaluations']} energy evaluations in all "
          f"(MD {md_evaluations}); model kept (ESS/N {100 * trainer.best_ess:.2f} %"
          f"{'' if trainer.best_reliable else ', no round at the target had weights with Pareto k < 0.5: the first one measured there'}) "
          f"-> {trainer.model_path}; curves -> {trainer.log_path}")
