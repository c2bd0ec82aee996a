"""Train one transferable ArBG on the MD of many capped peptides (arbg train-transferable).

Each --md folder is an ``arbg md`` output for one peptide (a folder with trajectory.dcd and
topology.pdb, or one level above it); --validation-md folders hold peptides whose sequences are
*not* trained on, and choose the best model. The bins are fitted to the training peptides only.
Use the model zero-shot with any command: ``arbg sample --model OUT/model.safetensors --system
peptide:KT``. Settings: NetworkConfig (openmm_arbg.model.network) and TransferableTrainingConfig
(openmm_arbg.training.transferable) fields as --field-name. An existing checkpoint in --output is
resumed unless --restart.
"""

import os

from .common import (add_dataclass_options, add_options, dataclass_values, positive_int, restart_or_resume,
                     stop_if_interrupted)

NAME = "train-transferable"
HELP = "train one sequence-conditioned ArBG on the MD of many peptides"
REQUIRED = ("md",)
DERIVED_NETWORK_FIELDS = ("vocab_size", "feature_sizes", "n_input_features", "context_sizes", "position_encoding",
                          "max_positions")


def _classes():
    from ..model.network import NetworkConfig
    from ..training.transferable import TransferableTrainingConfig

    return NetworkConfig, TransferableTrainingConfig


def add_arguments(p):
    p.add_argument("--md", nargs="+", metavar="FOLDER", help="arbg md output folders of the training peptides")
    p.add_argument("--validation-md", nargs="*", default=[], metavar="FOLDER",
                   help="arbg md output folders of held-out peptides (sequences not in --md)")
    p.add_argument("--stride", type=positive_int, default=1, help="use every n-th frame (default %(default)s)")
    p.add_argument("--n-bins", type=positive_int, default=256, help="bins per coordinate (default %(default)s)")
    p.add_argument("--branch-torsions", choices=("sibling", "parent"), default="sibling",
                   help="branch torsions from the earliest placed sibling (default), or from the parent's neighbours as "
                   "transferable models before openmm-arbg 0.3.1 (to resume such a run)")
    p.add_argument("--margin", type=float, default=0.1, help="fraction of each bin key's data range added on both "
                   "sides (default %(default)s)")
    p.add_argument("--output", default="arbg_transferable", help="folder for model.safetensors, checkpoint and log "
                   "(default %(default)s)")
    add_options(p, "device")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    add_options(p, "quiet")
    add_dataclass_options(p, _classes(), skip=DERIVED_NETWORK_FIELDS)


def settings(args):
    network_cls, training_cls = _classes()
    names = [n for n in network_cls.__dataclass_fields__ if n not in DERIVED_NETWORK_FIELDS]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}, dataclass_values(training_cls, args)


def validate(args, parser):
    try:
        settings(args)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if not 0 <= args.margin <= 10:
        parser.error(f"--margin must be in [0, 10]; got {args.margin}")


def md_files(folder):
    """(trajectory.dcd, topology.pdb) of an ``arbg md`` output folder (or of its one subfolder)."""
    if not os.path.exists(folder):
        raise FileNotFoundError(f"--md folder {folder} does not exist")
    if not os.path.isdir(folder):
        raise ValueError(f"--md {folder} is a file; give the folder arbg md or arbg peptide-md wrote (it holds "
                         "trajectory.dcd and topology.pdb)")
    for where in [folder] + sorted(os.path.join(folder, d) for d in os.listdir(folder)):
        traj, top = os.path.join(where, "trajectory.dcd"), os.path.join(where, "topology.pdb")
        if os.path.isfile(traj) and os.path.isfile(top):
            return traj, top
    raise FileNotFoundError(f"{folder} holds no trajectory.dcd with topology.pdb (an arbg md output folder, or one "
                            "level above it)")


def read_molecules(folders, stride, lazily=False):
    """(topology, positions) of each folder's MD; with ``lazily``, positions is a function that
    reads them when called (so many molecules need not be in memory at once)."""
    import functools

    import mdtraj

    from ..training import load_trajectories

    out = []
    for folder in folders:
        traj, top = md_files(folder)
        topology = mdtraj.load_topology(top)
        load = functools.partial(load_trajectories, [traj], top, stride=stride)
        out.append((topology, load if lazily else load()))
    return out


def run(args):
    import shlex

    from ..transferable import TransferableArBG, peptide_sequence
    from ..training.transferable import TransferableTrainer

    network, config = settings(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: molecules shared out, gradients averaged
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if str(args.device).startswith("cuda") else "gloo")
        if str(args.device).startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    train = read_molecules(args.md, args.stride, lazily=True)  # frames read when needed, one molecule at a time
    valid = read_molecules(args.validation_md, args.stride, lazily=True)
    model = TransferableArBG.create(train, network, n_bins=args.n_bins, margin=args.margin, seed=config.seed,
                                    branch_torsions=args.branch_torsions)
    restart_or_resume(args.output, args.restart, ("model.safetensors", "training_log.csv"))
    model.to(args.device)
    model.metadata["command"] = shlex.join(["arbg", NAME, *args.argv])
    print(model)
    trainer = TransferableTrainer(model, train, valid, config, output_dir=args.output, resume=True,
                                  progress=not args.quiet, stream=True)  # coordinates memory-mapped from OUTPUT/coordinates
    for name, mols in (("training", trainer.train), ("validation", trainer.valid)):
        print(f"{name}: " + ", ".join(f"{peptide_sequence(a.graph) or '?'} ({len(z)} frames)" for a, z in mols))
    history = trainer.fit()
    stop_if_interrupted(trainer, config.n_steps)
    last = history[-1] if history else {}
    print(f"step {trainer.step}/{config.n_steps}: held-out NLL {last.get('val_nll', float('nan')):.4f} nats/coordinate; "
          f"best model -> {trainer.model_path}; log -> {trainer.log_path}")
