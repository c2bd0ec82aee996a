"""Train an ArBG on trajectories by maximum likelihood (arbg train).

The settings are the fields of ModelConfig (openmm_arbg.arbg), NetworkConfig
(openmm_arbg.model.network; less vocab_size, feature_sizes and n_input_features, which come from
the data) and TrainingConfig (openmm_arbg.training): field_name is the option --field-name and
the key field_name of a --config YAML file. --seed sets the seed of both the model and the
training. An existing checkpoint in --output is resumed unless --restart.
"""

import os

from .common import (RENAMED, add_dataclass_options, add_options, dataclass_values, positive_int, restart_or_resume,
                     stop_if_interrupted, topology_file)

NAME = "train"
HELP = "train an ArBG on trajectories by maximum likelihood"
REQUIRED = ("trajectories",)
DERIVED_NETWORK_FIELDS = ("vocab_size", "feature_sizes", "n_input_features", "context_sizes")  # set from the data

RENAMED.update({
    "--steps": "--n-steps",
    "--lr": "--learning-rate",
    "--layers": "--n-layer",
    "--heads": "--n-head",
    "--bins": "--n-bins",
    "--max-minutes": "--max-time-s (in seconds)",
})


def _classes():
    from ..arbg import ModelConfig
    from ..model.network import NetworkConfig
    from ..training import TrainingConfig

    return ModelConfig, NetworkConfig, TrainingConfig


def add_arguments(p):
    p.add_argument("--trajectories", nargs="+", help="trajectory files mdtraj reads (DCD, XTC, H5, ...)")
    p.add_argument("--trajectory-weights", nargs="+", type=float, metavar="W",
                   help="relative weight of each trajectory's frames in training (one per trajectory, default 1 each): "
                        "2 counts a trajectory twice, without the copies of its held-out frames that listing it twice "
                        "would leave among the training frames")
    p.add_argument("--topology", help="topology file (PDB) of the molecule")
    p.add_argument("--stride", type=positive_int, default=1, help="use every n-th frame (default %(default)s)")
    p.add_argument("--output", default="arbg_model", help="folder for model.safetensors, checkpoint and log (default %(default)s)")
    p.add_argument("--init-from", metavar="TRANSFERABLE",
                   help="fine-tune: start from a transferable model (file or shipped name) made into this molecule's "
                        "model, its network and shared bins (the model and network settings then come from it)")
    add_options(p, "device")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    add_options(p, "quiet")
    add_dataclass_options(p, _classes(), skip=DERIVED_NETWORK_FIELDS)


def settings(args):
    """(ModelConfig, NetworkConfig, TrainingConfig) from the parsed options; ``ValueError`` for
    values the dataclasses refuse."""
    model_cls, network_cls, training_cls = _classes()
    network_names = [n for n in network_cls.__dataclass_fields__ if n not in DERIVED_NETWORK_FIELDS]
    return dataclass_values(model_cls, args), dataclass_values(network_cls, args, network_names), dataclass_values(training_cls, args)


def validate(args, parser):
    try:
        settings(args)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if args.init_from:
        model_cls, network_cls, _ = _classes()
        given = [n for cls in (model_cls, network_cls) for n in cls.__dataclass_fields__
                 if n not in DERIVED_NETWORK_FIELDS + ("seed",) and getattr(args, n, None) is not None]
        if given:
            parser.error("--init-from takes the model and network settings from the transferable model; drop "
                         + ", ".join("--" + n.replace("_", "-") for n in given))
    weights = args.trajectory_weights
    if weights is not None:
        if args.trajectories and len(weights) != len(args.trajectories):
            parser.error(f"--trajectory-weights has {len(weights)} values for {len(args.trajectories)} trajectories; "
                         "give one weight per trajectory")
        from ..training import trajectory_frame_weights

        try:  # the library's check of the values, before any file is read
            trajectory_frame_weights([1] * len(weights), weights)
        except ValueError as exc:
            parser.error(f"--trajectory-weights: {exc}")


def run(args):
    import shlex

    import mdtraj

    from ..arbg import ArBG
    from ..molecule.topology import MolecularGraph
    from ..simulation.md import md_provenance
    from ..training import Trainer, load_trajectories, trajectory_frame_weights

    model_config, network_config, config = settings(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: DistributedDataParallel
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if str(args.device).startswith("cuda") else "gloo")
        if str(args.device).startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    args.topology = topology_file(args.topology, args.trajectories[0])
    top = mdtraj.load_topology(args.topology)
    graph = MolecularGraph.from_topology(top)
    x, lengths = load_trajectories(args.trajectories, args.topology, stride=args.stride, graph=graph, return_lengths=True)
    print(f"{len(x)} frames of {graph.n_atoms} atoms from {len(args.trajectories)} file(s)")
    frame_weights = None
    if args.trajectory_weights is not None:
        frame_weights = trajectory_frame_weights(lengths, args.trajectory_weights)
        print("trajectory weights: " + ", ".join(f"{p} x{w:g} ({n} frames)"
                                                 for p, w, n in zip(args.trajectories, args.trajectory_weights, lengths)))
    if args.init_from:  # fine-tuning: the transferable model's network and shared bins, made into this molecule's
        from ..transferable import TransferableArBG

        model = TransferableArBG.load(args.init_from).for_topology(top, x[0])  # a shipped name is resolved by now
        model.metadata["fine_tuned_from"] = os.path.abspath(args.init_from)
        print(f"fine-tuning from the transferable model {args.init_from}")
    else:
        model = ArBG.from_data(top, x, network=network_config, **model_config.to_dict())
    restart_or_resume(args.output, args.restart, ("model.safetensors", "training_log.csv"))
    model.to(args.device)
    model.metadata["command"] = shlex.join(["arbg", "train", *args.argv])
    provenance = [md_provenance(path) for path in args.trajectories]
    if any(provenance):  # which System and temperature the MD simulated: the target a command without --system checks
        model.metadata["md"] = [p for p in provenance if p]
    print(model)
    trainer = Trainer(model, x, config, output_dir=args.output, resume=True, progress=not args.quiet,
                      frame_weights=frame_weights)
    history = trainer.fit()
    stop_if_interrupted(trainer, config.n_steps)
    last = history[-1] if history else {}
    scored = [h for h in history if h.get("val_nll") is not None]
    best = min(scored, key=lambda h: h["val_nll"]) if scored else {}
    print(
        f"step {trainer.step}/{config.n_steps}: validation NLL {last.get('val_nll', float('nan')):.4f} nats/coordinate "
        f"(best {best.get('val_nll', float('nan')):.4f} at step {best.get('step', '-')}); "
        f"best model -> {trainer.model_path}; log -> {trainer.log_path}"
    )
