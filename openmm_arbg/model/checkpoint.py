"""The one checkpoint file format: a safetensors file whose JSON metadata holds the configuration.

A checkpoint holds everything needed to rebuild a model and, for a training checkpoint, to
resume the trainer:

* ``config["molecule"]``: the molecular graph, its fingerprint, the representation, the bins,
  the reference stereochemistry;
* ``config["network"]``: the network's :class:`~openmm_arbg.model.network.NetworkConfig`;
* ``config["metadata"]``: free-form provenance (training settings, best validation NLL, ...);
* ``config["trainer"]`` (training checkpoints only): the trainer's resumable state;
* tensors ``network.*`` (weights) and, for training checkpoints, ``trainer.*`` (optimiser, EMA,
  random-number state).

Files are written atomically and read without unpickling anything. Version 1 files (written by
openmm-arbg 0.1) are upgraded on reading; files of a newer version are refused with a message.
"""

import json
import os

from ..utils import atomic_write

__all__ = ["FORMAT", "VERSION", "write_checkpoint", "read_checkpoint", "CheckpointError"]

FORMAT = "openmm-arbg-checkpoint"
VERSION = 2
_METADATA_KEY = "openmm_arbg"


class CheckpointError(ValueError):
    """A file that is not a readable openmm-arbg checkpoint of a supported version."""


def write_checkpoint(path, config, tensors):
    """Write ``tensors`` (dict of str -> torch.Tensor) and ``config`` (JSON-serialisable dict)
    to ``path`` atomically; returns the path."""
    from safetensors.torch import save_file

    config = dict(config, format=FORMAT, version=VERSION)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {_METADATA_KEY: json.dumps(config)}
    with atomic_write(path, mode=None) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return os.fspath(path)


def read_checkpoint(path):
    """Read a checkpoint: ``(config, tensors)`` in the current format. Never unpickles.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        Not a safetensors file, not an openmm-arbg checkpoint, corrupt metadata, or a version
        newer than this package reads.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable openmm-arbg checkpoint (safetensors could not parse it: {exc}). "
            "The file may be truncated or of another format; re-save the model with ArBG.save."
        ) from None
    if _METADATA_KEY not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not an openmm-arbg checkpoint (no '{_METADATA_KEY}' metadata)")
    try:
        config = json.loads(meta[_METADATA_KEY])
        version = int(config.get("version", -1))
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's metadata is corrupt ({exc})") from None
    if config.get("format") != FORMAT or version < 1:
        raise CheckpointError(f"{path}: not an {FORMAT!r} file (format {config.get('format')!r}, version {config.get('version')!r})")
    if version > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer openmm-arbg (checkpoint version {version}; this version reads up to "
            f"{VERSION}). Upgrade openmm-arbg to load it."
        )
    if version == 1:
        config, tensors = _upgrade_from_version_1(path, config, tensors)
    missing = [k for k in ("molecule" if "transferable" not in config else "transferable", "network") if k not in config]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint's metadata lacks {missing}; the file is corrupt")
    return config, tensors


def _upgrade_from_version_1(path, config, tensors):
    """Version 1: molecule keys at the top level, the network's per-molecule buffers among the
    weights (``model.position_features``, ``model.token_mask``), ``n_positions`` for the table."""
    if "resume" in config.get("metadata", {}):
        raise CheckpointError(
            f"{path} is a training checkpoint written by openmm-arbg 0.1; it cannot be resumed by this version. "
            "Its best model (model.safetensors in the same folder) still loads; start a new output folder to train on."
        )
    try:
        net = dict(config["network"])
        net["max_positions"] = net.pop("n_positions")
        net["position_encoding"] = "learned"
        molecule = {k: config[k] for k in ("graph", "fingerprint", "representation", "discretizer", "stereo_signs")}
    except KeyError as exc:
        raise CheckpointError(f"{path}: version-1 metadata lacks {exc}; the file is corrupt") from None
    upgraded = dict(format=FORMAT, version=VERSION, molecule=molecule, network=net, metadata=config.get("metadata", {}))
    dropped = {"model.position_features", "model.token_mask"}
    weights = {"network." + k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.") and k not in dropped}
    return upgraded, weights
