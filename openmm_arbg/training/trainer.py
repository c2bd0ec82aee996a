"""Maximum-likelihood training of an ArBG on MD trajectories.

Teacher forcing on the exact density: the loss is ``-mean log q_z(z)`` over frames. The
validation set is made of contiguous time blocks (frames next to each other in time are
correlated, so random splits overstate generalisation). AdamW with linear warm-up and cosine
decay, gradient clipping, optional EMA of the weights, early stopping on the validation NLL,
atomic checkpoints that resume bit-for-bit, a tqdm progress bar and a CSV log.

Runs unchanged under ``torchrun`` with DistributedDataParallel (gloo on CPU, nccl on GPU):
every rank holds the data, each takes its slice of every global batch, and only rank 0 writes.
"""

import contextlib
import csv
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..arbg import as_positions_nm
from ..model.checkpoint import read_checkpoint, write_checkpoint
from ..molecule.stereochemistry import equivalent_atom_groups, permute_equivalent_atoms
from ..utils import Settings, atomic_write, check_dcd_complete, load_trajectory

__all__ = ["TrainingConfig", "Trainer", "time_block_split", "load_trajectories", "trajectory_frame_weights", "check_memory"]


@dataclass
class TrainingConfig(Settings):
    """Training settings.

    Parameters
    ----------
    n_steps : int
        Optimiser steps in total.
    batch_size : int
        Frames per (global) batch.
    learning_rate : float
        Peak learning rate of AdamW.
    weight_decay : float
    warmup_steps : int
        Linear warm-up from 0 to ``learning_rate``.
    min_lr_fraction : float
        Cosine decay ends at ``min_lr_fraction * learning_rate``.
    grad_clip : float
        Gradient-norm clip (0: off).
    ema_decay : float
        Exponential moving average of the weights (0: off). The saved model uses the EMA weights.
    eval_interval : int
        Steps between validation passes (and CSV rows).
    patience : int
        Early stopping after this many validations without improvement (0: off).
    validation_fraction : float
        Fraction of frames held out, as contiguous time blocks.
    n_validation_blocks : int
        Number of held-out time blocks.
    checkpoint_interval : int
        Steps between resumable checkpoints.
    max_time_s : float
        Stop after this wall time in seconds (0: no limit). A stopped run resumes. The cosine
        schedule is not shortened: use ``time_budget_s`` to fit the schedule to a budget.
    time_budget_s : float
        If > 0, ``n_steps`` is set from the measured time of the first steps and a validation pass
        so that the whole schedule (warm-up and cosine decay) fits this wall time in seconds. The
        chosen ``n_steps`` is stored in the checkpoint, so a resumed run keeps it.
    permute_equivalent_atoms : bool
        Train on frames whose interchangeable terminal atoms (the hydrogens of CH3, CH2, NH3+) are
        randomly relabelled, so the model proposes every labelling: the Boltzmann distribution
        contains them all with equal weight, and a model that knows one labelling only gives
        heavy-tailed importance weights. Atoms the model's stereo check constrains (0.1 models)
        are left alone.
    checkpoint_time_s : float
        Also write a resumable checkpoint when this many seconds have passed since the last one
        (an interruption loses at most this much work).
    seed : int
    """

    n_steps: int = 5000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_fraction: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    eval_interval: int = 250
    patience: int = 0
    validation_fraction: float = 0.1
    n_validation_blocks: int = 5
    checkpoint_interval: int = 500
    max_time_s: float = 0.0
    time_budget_s: float = 0.0
    permute_equivalent_atoms: bool = True
    checkpoint_time_s: float = 60.0
    seed: int = 0

    what = "training settings"

    def __post_init__(self):
        minimum = dict(n_steps=1, batch_size=1, eval_interval=1, checkpoint_interval=1, n_validation_blocks=1)
        minimum.update(warmup_steps=0, patience=0)
        for name, lowest in minimum.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lowest:
                raise ValueError(f"training setting {name} must be an integer >= {lowest}; got {v!r}")
        ranges = {
            "learning_rate": (0, math.inf, False),
            "weight_decay": (0, math.inf, True),
            "min_lr_fraction": (0, 1, True),
            "grad_clip": (0, math.inf, True),
            "ema_decay": (0, 1, True),
            "validation_fraction": (0, 1, True),
            "max_time_s": (0, math.inf, True),
            "time_budget_s": (0, math.inf, True),
            "checkpoint_time_s": (0, math.inf, False),
        }
        for name, (lo, hi, closed) in ranges.items():
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (lo <= v if closed else lo < v)
            ok = ok and (v < hi if name in ("ema_decay", "validation_fraction") else v <= hi)
            if not ok:
                bracket = "[" if closed else "("
                close = ")" if name in ("ema_decay", "validation_fraction") else "]"
                raise ValueError(f"training setting {name} must be a number in {bracket}{lo}, {hi}{close}; got {v!r}")

    def schedule_key(self):
        """Settings that must not change when a run is resumed."""
        d = asdict(self)
        for k in ("max_time_s", "checkpoint_interval", "checkpoint_time_s"):
            d.pop(k)
        if self.time_budget_s:
            d.pop("n_steps")  # chosen from the budget at the start and kept in the checkpoint
        return d


def time_block_split(n_frames, validation_fraction=0.1, n_blocks=5):
    """Indices of training and validation frames, the latter in ``n_blocks`` contiguous blocks
    spread evenly over the data."""
    n_frames = int(n_frames)
    n_val = int(round(validation_fraction * n_frames))
    if validation_fraction <= 0 or n_val == 0:
        return np.arange(n_frames), np.arange(0)
    if n_val >= n_frames:
        raise ValueError(f"validation_fraction {validation_fraction} leaves no training frames")
    n_blocks = max(1, min(int(n_blocks), n_val))
    block = n_val // n_blocks
    segment = n_frames // n_blocks
    val = np.concatenate([np.arange(i * segment + segment - block, i * segment + segment) for i in range(n_blocks)])
    mask = np.zeros(n_frames, dtype=bool)
    mask[val] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def check_frame_weights(frame_weights, n_frames):
    """``frame_weights`` as a float64 array (n_frames,) of finite values >= 0, not all zero;
    ``ValueError`` otherwise."""
    w = np.asarray(frame_weights, dtype=np.float64).reshape(-1)
    if len(w) != n_frames:
        raise ValueError(f"frame_weights has {len(w)} values for {n_frames} frames; give one weight per frame")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("frame_weights must be finite and >= 0")
    if not w.sum() > 0:
        raise ValueError("frame_weights are all zero: no frame would be trained on")
    return w


def trajectory_frame_weights(lengths, weights):
    """Per-frame weights (sum(lengths),) from one weight per trajectory of ``lengths`` frames.

    Parameters
    ----------
    lengths : sequence of int
        Frames of each trajectory (as :func:`load_trajectories` reports with ``return_lengths``).
    weights : sequence of float
        Relative weight of every frame of each trajectory (``arbg train --trajectory-weights``):
        2 makes a trajectory count as if it were listed twice.

    Examples
    --------
    >>> trajectory_frame_weights([3, 2], [1, 2.5]).tolist()
    [1.0, 1.0, 1.0, 2.5, 2.5]
    """
    weights = [float(w) for w in weights]
    if len(weights) != len(lengths):
        raise ValueError(f"{len(weights)} trajectory weights for {len(lengths)} trajectories; give one weight per trajectory")
    if any(not math.isfinite(w) or w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"trajectory weights must be finite, >= 0 and not all zero; got {weights}")
    return np.repeat(np.asarray(weights, dtype=np.float64), np.asarray(lengths, dtype=np.int64))


def check_memory(n_bytes, what):
    """Raise ``MemoryError`` with advice if ``n_bytes`` exceed the memory available now."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return
    if n_bytes > 0.8 * available:
        raise MemoryError(
            f"{what} needs about {n_bytes / 2**30:.1f} GiB but only {available / 2**30:.1f} GiB of memory is free; "
            "use a larger stride, fewer trajectory files or a smaller batch size"
        )


def load_trajectories(paths, topology, stride=1, graph=None, return_lengths=False):
    """Positions (n, N, 3) nm from trajectory files that mdtraj reads, checked against the topology.

    Parameters
    ----------
    paths : list of str
    topology : str or mdtraj.Topology
        Topology file (e.g. PDB) or object for formats without one.
    stride : int
    graph : MolecularGraph, optional
        If given, each trajectory's topology must match it.
    return_lengths : bool
        Also return the number of frames read from each file (list of int).
    """
    import mdtraj

    from ..molecule.topology import MolecularGraph, check_bond_lengths

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("no trajectory files given")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise ValueError(f"stride (--stride) must be a positive integer; got {stride!r}")
    reference, source = None, "the topology"
    if isinstance(topology, (str, os.PathLike)):
        topology = os.fspath(topology)
        if not os.path.isfile(topology):
            raise FileNotFoundError(f"topology file {topology} does not exist")
        source = topology
        try:  # the topology file's own structure: its bond lengths are the reference (a PDB has coordinates)
            reference = mdtraj.load(topology).xyz[0]
        except Exception:
            reference = None
    out = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"trajectory file {path} does not exist")
        if os.path.getsize(path) == 0:
            raise ValueError(f"trajectory file {path} is empty")
        check_memory(os.path.getsize(path) * 3 // max(stride, 1), f"reading {path}")
        try:
            traj = load_trajectory(path, top=topology, stride=stride)
        except Exception as exc:
            raise ValueError(f"mdtraj cannot read {path}: {exc}") from None
        if traj.n_frames == 0:
            raise ValueError(f"trajectory file {path} holds no frames")
        check_dcd_complete(path, traj.n_frames, stride)
        if graph is not None:
            if traj.n_atoms != graph.n_atoms:
                raise ValueError(f"{path} has {traj.n_atoms} atoms; the model's molecule has {graph.n_atoms}")
            other = MolecularGraph.from_topology(traj.topology)
            if other.fingerprint() != graph.fingerprint():
                raise ValueError(f"the topology of {path} does not match the model's molecule")
        if graph is None:
            graph = MolecularGraph.from_topology(traj.topology)
        out.append(as_positions_nm(traj.xyz, what=f"frames of {path}"))
        if reference is not None and reference.shape == out[-1].shape[1:]:
            check_bond_lengths(out[-1], graph, reference, what=f"the frames of {path}", source=source)
    x = np.concatenate(out)
    _check_bonds(x, graph)
    return (x, [len(o) for o in out]) if return_lengths else x


def _check_bonds(x, graph):
    """MD frames must have physical bond lengths; an atom-order mismatch breaks many bonds."""
    i, j = np.array(graph.bonds).T
    lengths = np.linalg.norm(x[:, i] - x[:, j], axis=-1)
    broken = (np.median(lengths, axis=0) > 0.3).sum()
    if broken > 0:
        raise ValueError(
            f"{broken} of {len(i)} bonds are longer than 0.3 nm in most frames: the trajectory's atom order does not "
            "match the topology (or the coordinates are not in nm)"
        )


def _is_distributed():
    return dist.is_available() and dist.is_initialized()


def _rank_world():
    if _is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def holding_weights(net, state):
    """Load ``state`` (a state dict, e.g. EMA weights) into ``net`` for the block, then restore
    the weights it had."""
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    try:
        yield
    finally:
        net.load_state_dict(saved)


@torch.no_grad()
def update_ema(ema, net, decay):
    """``ema <- decay * ema + (1 - decay) * weights`` for every floating-point tensor of ``net``."""
    for k, v in net.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(decay).add_(v, alpha=1 - decay)


def effective_warmup_steps(warmup_steps, n_steps):
    """The warm-up a schedule of ``n_steps`` uses: ``warmup_steps``, or a tenth of ``n_steps`` when
    the schedule is not longer than the warm-up (a short run, or a short time budget), which would
    otherwise end before the learning rate peaks."""
    return warmup_steps if warmup_steps < n_steps else max(1, n_steps // 10)


def short_schedule_warning(warmup_steps, n_steps):
    """The warning for a schedule not longer than its warm-up (None if it is longer)."""
    if not warmup_steps or warmup_steps < n_steps:
        return None
    return (f"warning: warmup_steps ({warmup_steps}) is not fewer than n_steps ({n_steps}): warming up over "
            f"{effective_warmup_steps(warmup_steps, n_steps)} steps instead, so that the learning rate peaks and decays "
            "(set --warmup-steps below --n-steps to choose)")


def other_branch_torsions_error(where, setting, since):
    """The error for resuming, with today's default, a run written with ``branch_torsions=setting``."""
    return ValueError(f"{where} was written with branch_torsions={setting!r} (the default changed in openmm-arbg {since}); "
                      f"resume it with --branch-torsions {setting} (branch_torsions={setting!r}), or use another output folder")


def warmup_cosine(step, peak, warmup_steps, total_steps, min_fraction):
    """Learning rate at ``step``: linear warm-up to ``peak`` over ``warmup_steps``, then cosine
    decay to ``min_fraction * peak`` at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return peak * (min_fraction + (1 - min_fraction) * cosine)


def optimizer_step(net, optimizer, loss, grad_clip, world=1):
    """Back-propagate ``loss`` and take one step, clipping the gradient norm at ``grad_clip`` (0: off).
    With ``world > 1`` (processes that did not go through DistributedDataParallel) the gradients
    are first averaged over the processes."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if world > 1:
        for p in net.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()


def training_files(output_dir):
    """``(checkpoint, best model, log)`` paths of a training run's output folder."""
    return tuple(os.path.join(output_dir, name) for name in ("checkpoint.safetensors", "model.safetensors", "training_log.csv"))


def check_same_settings(where, saved, current, what):
    """``ValueError`` naming the settings that differ between a checkpoint's ``saved`` schedule key
    and the ``current`` one (``what``: e.g. "training settings")."""
    if saved != current:
        changed = sorted(k for k, v in current.items() if saved.get(k) != v)
        raise ValueError(f"{where} was written with other {what} ({', '.join(changed)} differ); resume with the same "
                         "settings or use another output folder")


def make_optimizer(net, learning_rate, weight_decay):
    """AdamW with weight decay on the matrices only (not on biases, norms or embeddings)."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (decay if p.dim() >= 2 and "embedding" not in name else no_decay).append(p)
    return torch.optim.AdamW(
        [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)],
        lr=learning_rate,
        betas=(0.9, 0.99),
    )


def optimizer_tensors(optimizer):
    """The optimiser's state as flat checkpoint tensors (``trainer.optim.<index>.<name>``); its
    ``param_groups`` (without parameters) go into the checkpoint's JSON."""
    out = {}
    for idx, st in optimizer.state_dict()["state"].items():
        for key, val in st.items():
            out[f"trainer.optim.{idx}.{key}"] = torch.as_tensor(val).reshape(-1).clone()
    return out


def load_optimizer_tensors(optimizer, tensors, param_groups):
    """Restore what :func:`optimizer_tensors` wrote, with the saved ``param_groups``."""
    state = {}
    for key, val in tensors.items():
        if key.startswith("trainer.optim."):
            _, _, idx, name = key.split(".", 3)
            state.setdefault(int(idx), {})[name] = val
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for idx, st in state.items():
        st["step"] = st["step"].reshape(())
        for name in ("exp_avg", "exp_avg_sq"):
            st[name] = st[name].reshape(params[idx].shape)
    groups = optimizer.state_dict()["param_groups"]  # parameter ids in the order saved
    groups = [dict(saved, params=g["params"]) for g, saved in zip(groups, param_groups)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


class Trainer:
    """Train an :class:`~openmm_arbg.ArBG` on frames by maximum likelihood.

    Parameters
    ----------
    model : ArBG
    positions : array_like (n, N, 3) nm or mdtraj.Trajectory
        Training frames in time order (the validation blocks are cut from them).
    config : TrainingConfig or dict
    output_dir : str
        Where ``model.safetensors`` (best model), ``checkpoint.safetensors`` (resumable state) and
        ``training_log.csv`` go.
    resume : bool
        Continue from ``output_dir/checkpoint.safetensors`` if it exists.
    progress : bool
    frame_weights : array_like (n,), optional
        Relative weight of each frame (>= 0, for example 2 for every frame of a trajectory that
        should count twice, as ``arbg train --trajectory-weights`` sets them). Batches are then
        drawn with replacement with probability proportional to the weight, and the validation NLL
        is the weighted mean over the held-out blocks, so training and model selection follow the
        same weighted objective. Unlike listing a trajectory twice, a held-out frame never has a
        copy among the training frames. Default: every frame once per epoch.
    """

    def __init__(self, model, positions, config=None, output_dir="arbg_model", resume=True, progress=True,
                 frame_weights=None):
        self.model = model
        self.config = config if isinstance(config, TrainingConfig) else TrainingConfig.from_dict(config or {})
        self.output_dir = os.fspath(output_dir)
        self.progress = progress
        self.rank, self.world = _rank_world()
        x = as_positions_nm(positions, model.n_atoms, model.graph, "training positions")
        if self.config.permute_equivalent_atoms:
            groups = [g for g in equivalent_atom_groups(model.graph) if g[0] not in model.stereo.centers]
            x = permute_equivalent_atoms(x, groups, rng=self.config.seed)
        check_memory(x.shape[0] * model.n_coords * 8 * 2, "the model coordinates of the training frames")
        with torch.no_grad():
            z, _ = model.representation.to_model_coordinates(torch.as_tensor(x))
        digest = hashlib.sha256(np.ascontiguousarray(z.numpy()).tobytes())
        weights = None if frame_weights is None else check_frame_weights(frame_weights, len(z))
        if weights is not None:  # a resume with other weights is another objective: refused like other data
            digest.update(np.ascontiguousarray(weights).tobytes())
        self.data_hash = digest.hexdigest()[:16]
        train_idx, val_idx = time_block_split(len(z), self.config.validation_fraction, self.config.n_validation_blocks)
        self.z_train, self.z_val = z[train_idx], z[val_idx]
        self._w_cdf = self.w_val = None  # cumulative training weights (batches), validation weights
        if weights is not None:
            cdf = np.cumsum(weights[train_idx])
            if not cdf[-1] > 0:
                raise ValueError("frame_weights are zero on every training frame (outside the validation blocks)")
            self._w_cdf = cdf / cdf[-1]  # ends at exactly 1: a draw u < 1 never lands past the last weighted frame
            self.w_val = torch.as_tensor(weights[val_idx])
            if len(self.w_val) and not float(self.w_val.sum()) > 0:
                self.z_val, self.w_val = self.z_val[:0], self.w_val[:0]  # no weighted validation frames: none at all
        if len(self.z_train) < self.config.batch_size:
            raise ValueError(f"{len(self.z_train)} training frames are fewer than one batch ({self.config.batch_size})")
        if self.config.batch_size % self.world:
            raise ValueError(f"batch_size {self.config.batch_size} must be divisible by the number of processes {self.world}")
        self.device = model.device
        self.net = model.density
        self.ddp = None
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.net)
        self.optimizer = make_optimizer(self.net, self.config.learning_rate, self.config.weight_decay)
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()} if self.config.ema_decay else None
        self.step = 0
        self.best_val = math.inf
        self.bad_evals = 0
        self.history = []
        self._budget_fitted = False
        self.checkpoint_path, self.model_path, self.log_path = training_files(self.output_dir)
        if resume and os.path.exists(self.checkpoint_path):
            self._load_checkpoint()

    # ------------------------------------------------------------------ schedule and batches
    def warmup_steps(self):
        """The warm-up used (:func:`effective_warmup_steps`)."""
        return effective_warmup_steps(self.config.warmup_steps, self.config.n_steps)

    def _warn_short_schedule(self):
        message = short_schedule_warning(self.config.warmup_steps, self.config.n_steps)
        if message and self.progress and self.rank == 0:
            print(message, flush=True)

    def learning_rate(self, step):
        c = self.config
        return warmup_cosine(step, c.learning_rate, self.warmup_steps(), c.n_steps, c.min_lr_fraction)

    def _batch_indices(self, step):
        """This rank's frame indices for ``step``: deterministic in (seed, step), independent of
        how the run was interrupted."""
        if self._w_cdf is not None:  # weighted frames: with replacement, proportional to the weights
            u = np.random.default_rng([self.config.seed, step]).random(self.config.batch_size)
            batch = torch.as_tensor(np.minimum(np.searchsorted(self._w_cdf, u, side="right"), len(self._w_cdf) - 1))
            share = self.config.batch_size // self.world
            return batch[self.rank * share : (self.rank + 1) * share]
        n = len(self.z_train)
        per_epoch = n // self.config.batch_size
        epoch, k = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)
        batch = perm[k * self.config.batch_size : (k + 1) * self.config.batch_size]
        share = self.config.batch_size // self.world
        return batch[self.rank * share : (self.rank + 1) * share]

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def validation_nll(self, batch_size=2048):
        """Validation NLL in nats per coordinate of the exact density over model coordinates (the
        ``frame_weights``-weighted mean when they are given)."""
        if len(self.z_val) == 0:
            return math.nan
        total = 0.0
        w = self.w_val
        with self._holding(self.ema) if self.ema is not None else contextlib.nullcontext():
            for s in range(0, len(self.z_val), batch_size):  # log_prob evaluates without dropout
                nll = -self.net.log_prob(self.z_val[s : s + batch_size].to(self.device)).double().cpu()
                total += float(nll.sum() if w is None else (nll * w[s : s + batch_size]).sum())
        norm = len(self.z_val) if w is None else float(w.sum())
        return total / (norm * self.model.n_coords)

    def _holding(self, state):
        """Load ``state`` (e.g. the EMA weights) into the network for the block, then restore."""
        return holding_weights(self.net, state)

    # ------------------------------------------------------------------ storage
    def _model_state(self):
        return self.ema if self.ema is not None else self.net.state_dict()

    def _save_model(self, path, state):
        self.model.metadata["training"] = dict(
            config=asdict(self.config), step=self.step, best_validation_nll=self.best_val, data_hash=self.data_hash
        )
        with self._holding(state):
            self.model.save(path)

    def _save_checkpoint(self):
        if self.rank != 0:
            return
        tensors = self.model.network_tensors()
        tensors.update(optimizer_tensors(self.optimizer))
        opt = self.optimizer.state_dict()
        if self.ema is not None:
            for k, v in self.ema.items():
                tensors[f"trainer.ema.{k}"] = v
        tensors["trainer.rng.torch"] = torch.get_rng_state()
        config = self.model.checkpoint_config()
        config["trainer"] = dict(
            step=self.step,
            best_val=self.best_val if math.isfinite(self.best_val) else None,
            bad_evals=self.bad_evals,
            schedule=self.config.schedule_key(),
            n_steps=self.config.n_steps,
            data_hash=self.data_hash,
            history=self.history,
            param_groups=[{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]],
        )
        write_checkpoint(self.checkpoint_path, config, tensors)

    def _load_checkpoint(self):
        config, tensors = read_checkpoint(self.checkpoint_path)
        meta = config.get("trainer")
        where = self.checkpoint_path
        if meta is None:
            raise ValueError(f"{where} is a model file, not a resumable training checkpoint; use another output folder")
        mine = self.model.checkpoint_config()
        if config["molecule"]["fingerprint"] != mine["molecule"]["fingerprint"]:
            raise ValueError(f"{where} belongs to another molecule; use another output folder")
        theirs_rep, mine_rep = config["molecule"]["representation"], mine["molecule"]["representation"]

        def without_branches(d):
            return {k: v for k, v in d.items() if k != "branches"}

        if theirs_rep.get("branches") != mine_rep.get("branches") and without_branches(theirs_rep) == without_branches(mine_rep):
            setting = "sibling" if theirs_rep.get("branches") else "parent"
            raise other_branch_torsions_error(where, setting, "0.3")
        for section, key in (("molecule", "representation"), ("molecule", "discretizer")):
            if config[section][key] != mine[section][key]:
                raise ValueError(
                    f"{where} was written with another {key} (representation, anchors, bins or data range); "
                    "resume with the same model settings and data, or use another output folder"
                )
        if config["network"] != mine["network"]:
            changed = sorted(k for k in mine["network"] if config["network"].get(k) != mine["network"][k])
            raise ValueError(
                f"{where} was written with other network settings ({', '.join(changed)} differ); resume with the same "
                "settings or use another output folder"
            )
        check_same_settings(where, meta["schedule"], self.config.schedule_key(), "training settings")
        if meta["data_hash"] != self.data_hash:
            raise ValueError(f"{where} was trained on other frames; resume with the same data and stride")
        self.model.load_network_weights(tensors)
        load_optimizer_tensors(self.optimizer, tensors, meta["param_groups"])
        if self.ema is not None:
            self.ema = {k[len("trainer.ema.") :]: v.clone() for k, v in tensors.items() if k.startswith("trainer.ema.")}
        torch.set_rng_state(tensors["trainer.rng.torch"])
        self.step = int(meta["step"])
        if self.config.time_budget_s and "n_steps" in meta:
            self.config.n_steps = int(meta["n_steps"])
            self._budget_fitted = True
        self.best_val = math.inf if meta["best_val"] is None else float(meta["best_val"])
        self.bad_evals = int(meta["bad_evals"])
        self.history = list(meta["history"])

    def _write_log(self):
        if self.rank != 0 or not self.history:
            return
        with atomic_write(self.log_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)

    # ------------------------------------------------------------------ the loop
    def _fit_schedule_to_budget(self, elapsed, step_time):
        """Set ``n_steps`` so that the schedule ends within ``time_budget_s``, from the measured
        time of a step (after warm-up) and of one validation pass; ``elapsed`` seconds are spent."""
        c = self.config
        t0 = time.time()
        self.validation_nll()
        t_val = time.time() - t0
        per_step = step_time + t_val / c.eval_interval
        remaining = c.time_budget_s - elapsed - t_val
        n_steps = torch.tensor([max(self.step + 1, self.step + int(0.95 * remaining / per_step))])
        if _is_distributed():
            dist.broadcast(n_steps, src=0)  # every rank follows rank 0's schedule
        c.n_steps = int(n_steps)
        self._budget_fitted = True
        if self.progress and self.rank == 0:
            print(f"time budget {c.time_budget_s:.0f} s: {per_step * 1e3:.1f} ms per step -> n_steps = {c.n_steps}", flush=True)
        self._warn_short_schedule()

    def fit(self, stop_after=None):
        """Train until ``n_steps``, early stopping or ``max_time_s``; returns the history (list of
        dict: step, lr, train_nll, val_nll per coordinate, elapsed_s).

        ``stop_after`` steps in this call: stop there and write a checkpoint, as an interruption
        would (the schedule is unchanged; a new Trainer with ``resume=True`` continues)."""
        from ..utils import progress_bar as tqdm  # tqdm on a terminal, plain lines in logs

        c = self.config
        os.makedirs(self.output_dir, exist_ok=True)
        module = self.ddp if self.ddp is not None else self.net
        start_time = time.time()
        last_checkpoint = start_time
        first_step = self.step
        elapsed0 = self.history[-1]["elapsed_s"] if self.history else 0.0
        if not c.time_budget_s:
            self._warn_short_schedule()
        bar = tqdm(total=c.n_steps, initial=self.step, desc="train", unit="step", disable=not self.progress or self.rank != 0)
        from ..utils import GracefulStop

        # SIGINT/SIGTERM: finish the step, write the checkpoint, stop (a second signal stops at once)
        stop = GracefulStop("writing a checkpoint after this training step (press Ctrl-C again to stop now)")
        stop.__enter__()
        self.interrupted = None
        try:
            self._fit_loop(c, module, bar, start_time, last_checkpoint, first_step, elapsed0, stop_after, stop)
        finally:
            stop.__exit__(None, None, None)
        bar.close()
        if self.rank == 0 and not os.path.exists(self.model_path):
            self._save_model(self.model_path, self._model_state())
        # leave the model holding the best weights
        best = read_checkpoint(self.model_path)[1] if self.rank == 0 or not _is_distributed() else None
        if best is not None:
            self.model.load_network_weights(best)
        self.model.eval()
        if _is_distributed():
            dist.barrier()  # no rank tears down its process group while rank 0 still writes files
        return self.history

    def _fit_loop(self, c, module, bar, start_time, last_checkpoint, first_step, elapsed0, stop_after, stop):
        """The training steps of :meth:`fit`, with evaluations and checkpoints."""
        running, count = 0.0, 0
        stopped_early = False
        while self.step < c.n_steps:
            lr = self.learning_rate(self.step)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            idx = self._batch_indices(self.step)
            z = self.z_train[idx].to(self.device)
            self.net.train()  # training mode (dropout) only inside the step
            loss = -module(z).mean()  # NLL per coordinate
            if not bool(torch.isfinite(loss)):
                self.net.eval()
                raise FloatingPointError(
                    f"the training loss became {loss.item()} at step {self.step + 1}; nothing was saved from this step "
                    f"(the last checkpoint and best model are intact). Lower learning_rate (now {c.learning_rate}) "
                    "or set grad_clip, and check the training frames for broken geometries."
                )
            optimizer_step(self.net, self.optimizer, loss, c.grad_clip)
            self.net.eval()
            if self.ema is not None:
                update_ema(self.ema, self.net, c.ema_decay)
            self.step += 1
            if c.time_budget_s and not self._budget_fitted:
                if self.step == first_step + 5:  # the first steps pay for warm-up (CUDA kernels, caches)
                    timing_start = time.time()
                elif self.step == first_step + 25:
                    self._fit_schedule_to_budget(time.time() - start_time, (time.time() - timing_start) / 20)
                    bar.total = c.n_steps
            running += loss.item()
            count += 1
            bar.update(1)
            if self.step % c.eval_interval == 0 or self.step == c.n_steps:
                val = self.validation_nll()
                row = dict(
                    step=self.step,
                    lr=lr,
                    train_nll=running / count,
                    val_nll=val,
                    elapsed_s=round(elapsed0 + time.time() - start_time, 2),
                )
                self.history.append(row)
                running, count = 0.0, 0
                bar.set_postfix(train=f"{row['train_nll']:.4f}", val=f"{val:.4f}")
                if len(self.z_val) and not math.isfinite(val):
                    raise FloatingPointError(
                        f"the validation NLL became {val} at step {self.step}; the best model "
                        f"({self.model_path}) and the last checkpoint are kept. Lower learning_rate or ema_decay."
                    )
                if not len(self.z_val) or val < self.best_val:  # without validation frames: the latest
                    self.best_val = val if math.isfinite(val) else self.best_val
                    self.bad_evals = 0
                    if self.rank == 0:
                        self._save_model(self.model_path, self._model_state())
                else:
                    self.bad_evals += 1
                self._write_log()
                if c.patience and self.bad_evals >= c.patience:
                    stopped_early = True
            if (
                self.step % c.checkpoint_interval == 0
                or self.step == c.n_steps
                or stopped_early
                or time.time() - last_checkpoint > c.checkpoint_time_s
            ):
                self._save_checkpoint()
                last_checkpoint = time.time()
            if stopped_early:
                break
            if (c.max_time_s and time.time() - start_time > c.max_time_s) or (
                stop_after is not None and self.step >= stop_after
            ):
                self._save_checkpoint()
                break
            if stop.requested:
                self._save_checkpoint()
                self.interrupted = stop.requested
                break
