"""Training a transferable ArBG on the MD of many peptides, validated on held-out sequences.

Each step draws ``molecules_per_step`` training molecules and ``batch_size`` frames of each and
minimises the mean negative log-likelihood per coordinate of the shared network over them, so
every gradient mixes molecules of different sizes. Launched by ``torchrun`` (a process group
initialised), the step's molecules are shared out among the processes and their gradients
averaged, so N processes take the same steps as one process would, N times faster; AdamW with warm-up and cosine decay, an optional
EMA of the weights, a checkpoint (resumable, also on Ctrl-C) and the best model by the NLL of
*held-out sequences* (not held-out frames of the training sequences). The optimiser, schedule and
weight helpers are the single-molecule trainer's (:mod:`openmm_arbg.training.trainer`).
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

from ..arbg import as_positions_nm
from ..model.checkpoint import read_checkpoint, write_checkpoint
from ..molecule.topology import MolecularGraph
from ..transferable import peptide_sequence
from ..utils import GracefulStop, Settings, atomic_write, progress_bar
from .trainer import (_is_distributed, _rank_world, check_memory, check_same_settings, holding_weights,
                      effective_warmup_steps, load_optimizer_tensors, make_optimizer, optimizer_step, optimizer_tensors,
                      other_branch_torsions_error, short_schedule_warning, training_files, update_ema, warmup_cosine)

__all__ = ["TransferableTrainingConfig", "TransferableTrainer"]


@dataclass
class TransferableTrainingConfig(Settings):
    """Settings of :class:`TransferableTrainer`.

    Parameters
    ----------
    n_steps : int
        Optimiser steps.
    batch_size : int
        Frames of each molecule per step.
    molecules_per_step : int
        Training molecules in each step (drawn without replacement; all if fewer).
    learning_rate : float
        Peak learning rate of AdamW.
    warmup_steps : int
        Steps of linear warm-up to ``learning_rate`` (fewer than ``n_steps``).
    min_lr_fraction : float
        The cosine decay ends at ``min_lr_fraction * learning_rate``.
    weight_decay : float
        AdamW weight decay of the weight matrices.
    grad_clip : float
        Gradient-norm clipping (0: off).
    ema_decay : float
        Exponential moving average of the weights (0: off); the saved model holds it.
    eval_interval : int
        Steps between validations (NLL of the held-out sequences) and log rows.
    validation_frames : int
        Frames of each held-out sequence in the validation NLL, at most (evenly spaced).
    max_time_s : float
        Stop (with a checkpoint) after this many seconds of this call (0: no limit).
    time_budget_s : float
        Fit the schedule to this many seconds (0: off): after 25 steps, ``n_steps`` is set from
        the measured time of a step and of a validation, so warm-up and cosine decay end in time.
    seed : int
    """

    n_steps: int = 2000
    batch_size: int = 64
    molecules_per_step: int = 4
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    min_lr_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    eval_interval: int = 100
    validation_frames: int = 500
    max_time_s: float = 0.0
    time_budget_s: float = 0.0
    seed: int = 0

    what = "transferable training settings"

    def __post_init__(self):
        for name in ("n_steps", "batch_size", "molecules_per_step", "eval_interval", "validation_frames"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or int(v) < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if not float(self.learning_rate) > 0:
            raise ValueError(f"learning_rate must be positive; got {self.learning_rate!r}")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay!r}")
        if int(self.warmup_steps) < 0 or float(self.max_time_s) < 0 or float(self.time_budget_s) < 0:
            raise ValueError("warmup_steps, max_time_s and time_budget_s must be >= 0")
        if not self.time_budget_s and int(self.warmup_steps) >= int(self.n_steps):
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be fewer than n_steps ({self.n_steps}): the learning "
                             "rate would never reach learning_rate; lower warmup_steps")

    def schedule_key(self):
        """Settings a resume must share (everything but the time limit; with a time budget, the
        number of steps is the one fitted to it, kept in the checkpoint)."""
        d = asdict(self)
        d.pop("max_time_s")
        if self.time_budget_s:
            d.pop("n_steps")
        return d


def _molecule_data(model, molecules, what, store=None):
    """ArBGs (sharing the model's network) and model coordinates (float64 arrays (n, D)) of each
    molecule. ``positions`` may be a function that loads them (read once here, then dropped); with
    ``store`` (a folder) the coordinates are written there and memory-mapped, so memory does not
    grow with the number of molecules."""
    out = []
    for m, (topology, positions) in enumerate(molecules):
        graph = MolecularGraph.from_topology(topology)
        x = as_positions_nm(positions() if callable(positions) else positions, graph.n_atoms, graph,
                            f"{what} positions of molecule {m}")
        check_memory(x.shape[0] * 3 * graph.n_atoms * 8 * 2, f"the model coordinates of {what} molecule {m}")
        arbg = model.for_topology(graph, x[0])
        ok = arbg.check_stereo(x)
        if not ok.all():
            raise ValueError(f"{int((~ok).sum())} of {len(x)} {what} frames of {peptide_sequence(graph) or 'molecule ' + str(m)} "
                             "have a stereocentre of the other handedness than the first frame")
        with torch.no_grad():
            z = arbg.representation.to_model_coordinates(torch.as_tensor(x))[0].numpy()
        del x
        if store is not None:
            z = _memory_mapped(z, os.path.join(store, f"{what}_{m:04d}_{arbg.fingerprint()[:16]}.npy"))
        out.append((arbg, z))
    return out


def _memory_mapped(z, path):
    """``z`` written to ``path`` (atomically; kept if it holds the same values) and mapped back read-only."""
    from ..utils import atomic_write

    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        try:
            old = np.load(path, mmap_mode="r")
            if old.shape == z.shape and np.array_equal(old, z):
                return old
        except (OSError, ValueError):
            pass  # damaged: written again
    with atomic_write(path, mode=None) as tmp:  # the temporary name ends in .npy: np.save keeps it
        np.save(tmp, z)
    return np.load(path, mmap_mode="r")


def _rows(z, idx, device):
    """Rows ``idx`` of a (memory-mapped) coordinate array as a float64 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(z[np.asarray(idx)])).to(device)


def step_molecule_count(config, train):
    """Molecules in each step: ``molecules_per_step``, or all when there are fewer."""
    return min(config.molecules_per_step, len(train))


class TransferableTrainer:
    """Maximum likelihood of one :class:`~openmm_arbg.transferable.TransferableArBG` on many peptides.

    Parameters
    ----------
    model : TransferableArBG
    molecules : list of (topology, positions)
        Training peptides: topology and frames (n, N, 3) nm or ``mdtraj.Trajectory``.
    validation : list of (topology, positions), optional
        Held-out peptides (sequences not among the training ones): the best model is chosen by
        their NLL. Without them, the latest model is kept.
    config : TransferableTrainingConfig or dict
    output_dir : str
        ``model.safetensors`` (best transferable model), ``checkpoint.safetensors``,
        ``training_log.csv``.
    resume : bool
    progress : bool
    stream : bool
        Keep the molecules' model coordinates in ``output_dir/coordinates/`` and read them from
        there (memory-mapped) instead of holding them in memory; with ``positions`` given as
        functions that load them, memory stays at about one molecule's frames however many
        molecules there are.
    """

    def __init__(self, model, molecules, validation=(), config=None, output_dir="arbg_transferable", resume=True,
                 progress=True, stream=False):
        self.model = model
        self.config = config if isinstance(config, TransferableTrainingConfig) else TransferableTrainingConfig.from_dict(config or {})
        self.output_dir = os.fspath(output_dir)
        self.progress = progress
        store = os.path.join(self.output_dir, "coordinates") if stream else None
        self.train = _molecule_data(model, molecules, "training", store)
        self.valid = _molecule_data(model, validation, "validation", store)
        if not self.train:
            raise ValueError("no training molecules")
        self.model.sequences = [peptide_sequence(a.graph) for a, _ in self.train]
        self.validation_sequences = [peptide_sequence(a.graph) for a, _ in self.valid]
        overlap = sorted(set(self.validation_sequences) & set(self.model.sequences))
        if overlap:
            raise ValueError(f"validation sequences {overlap} are also training sequences; validate on held-out sequences")
        digest = hashlib.sha256()
        for arbg, z in self.train + self.valid:
            digest.update(arbg.fingerprint().encode())
            for s in range(0, len(z), 4096):  # in blocks: a memory-mapped array is not read whole
                digest.update(np.ascontiguousarray(z[s : s + 4096]).tobytes())
        self.data_hash = digest.hexdigest()[:16]
        self.net = model.network
        self.rank, self.world = _rank_world()
        if step_molecule_count(self.config, self.train) % self.world:
            raise ValueError(f"{step_molecule_count(self.config, self.train)} molecules per step cannot be shared evenly by "
                             f"{self.world} processes; choose molecules_per_step as a multiple of the process count")
        if self.world > 1:  # every process starts from rank 0's weights
            import torch.distributed as dist

            for p in self.net.parameters():
                dist.broadcast(p.data, src=0)
        self.optimizer = make_optimizer(self.net, self.config.learning_rate, self.config.weight_decay)
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()} if self.config.ema_decay else None
        self.step, self.best_val, self.history = 0, math.inf, []
        self.budget_fitted = False
        self.interrupted = None
        self.checkpoint_path, self.model_path, self.log_path = training_files(self.output_dir)
        if resume and os.path.exists(self.checkpoint_path):
            self._load_checkpoint()

    # ------------------------------------------------------------------ pieces
    def learning_rate(self, step):
        """Warm-up and cosine decay; a time budget shorter than the warm-up warms up over a tenth
        of the fitted schedule instead (:func:`~openmm_arbg.training.trainer.effective_warmup_steps`)."""
        c = self.config
        return warmup_cosine(step, c.learning_rate, effective_warmup_steps(c.warmup_steps, c.n_steps), c.n_steps,
                             c.min_lr_fraction)

    def _batch(self, step):
        """This process's (molecule index, frame indices) pairs of one step: deterministic in
        (seed, step); the step's molecules are shared out among the processes."""
        rng = np.random.default_rng([self.config.seed, step])
        chosen = rng.choice(len(self.train), size=step_molecule_count(self.config, self.train), replace=False)
        pairs = [(int(m), rng.integers(0, len(self.train[m][1]), self.config.batch_size)) for m in chosen]
        return pairs[self.rank :: self.world]

    @torch.no_grad()
    def validation_nll(self):
        """Mean over held-out molecules of the NLL per coordinate (nats) of their frames."""
        if not self.valid:
            return math.nan
        values = []
        with holding_weights(self.net, self.ema) if self.ema is not None else contextlib.nullcontext():
            for arbg, z in self.valid:
                idx = np.unique(np.linspace(0, len(z) - 1, min(len(z), self.config.validation_frames)).astype(int))
                values.append(float(-arbg.density.log_prob(_rows(z, idx, self.model.device)).mean()) / arbg.n_coords)
        return float(np.mean(values))

    def _fit_schedule_to_budget(self, elapsed, step_time):
        """``n_steps`` such that the schedule ends within ``time_budget_s``: ``elapsed`` seconds
        are spent, a step takes ``step_time`` and a validation is timed here."""
        c = self.config
        t0 = time.time()
        self.validation_nll()
        t_val = time.time() - t0
        remaining = c.time_budget_s - elapsed - t_val
        n_steps = torch.tensor([max(self.step + 1, self.step + int(0.95 * remaining / (step_time + t_val / c.eval_interval)))])
        if self.world > 1:  # every process follows rank 0's schedule
            import torch.distributed as dist

            dist.broadcast(n_steps, src=0)
        c.n_steps = int(n_steps)
        self.budget_fitted = True
        message = short_schedule_warning(c.warmup_steps, c.n_steps)
        if message and self.progress and self.rank == 0:
            print(message, flush=True)

    def _save_model(self):
        self.model.metadata["training"] = dict(config=asdict(self.config), step=self.step,
                                               best_validation_nll=self.best_val if math.isfinite(self.best_val) else None,
                                               validation_sequences=self.validation_sequences,
                                               data_hash=self.data_hash)
        with holding_weights(self.net, self.ema) if self.ema is not None else contextlib.nullcontext():
            self.model.save(self.model_path)

    def _save_checkpoint(self):
        tensors = self.model.network_tensors()
        tensors.update(optimizer_tensors(self.optimizer))
        if self.ema is not None:
            tensors.update({f"trainer.ema.{k}": v for k, v in self.ema.items()})
        config = self.model.checkpoint_config()
        config["trainer"] = dict(step=self.step, n_steps=self.config.n_steps, best_val=self.best_val if math.isfinite(self.best_val) else None,
                                 schedule=self.config.schedule_key(), data_hash=self.data_hash, history=self.history,
                                 param_groups=[{k: v for k, v in g.items() if k != "params"}
                                               for g in self.optimizer.state_dict()["param_groups"]])
        write_checkpoint(self.checkpoint_path, config, tensors)

    def _load_checkpoint(self):
        config, tensors = read_checkpoint(self.checkpoint_path)
        where, meta = self.checkpoint_path, config.get("trainer")
        if meta is None or "transferable" not in config:
            raise ValueError(f"{where} is not a transferable model's training checkpoint; use another output folder")
        if config["network"] != self.model.checkpoint_config()["network"]:
            raise ValueError(f"{where} was written with other network settings; resume with the same or use another folder")
        setting = config["transferable"].get("branch_torsions", "parent")
        if setting != self.model.branch_torsions:
            raise other_branch_torsions_error(where, setting, "0.3.1")
        if config["transferable"]["bins"] != self.model.checkpoint_config()["transferable"]["bins"]:
            raise ValueError(f"{where} was written with other bins (other training frames); use another output folder")
        check_same_settings(where, meta["schedule"], self.config.schedule_key(), "training settings")
        if meta["data_hash"] != self.data_hash:
            raise ValueError(f"{where} was trained on other molecules or frames; resume with the same data")
        self.net.load_state_dict({k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")})
        load_optimizer_tensors(self.optimizer, tensors, meta["param_groups"])
        if self.ema is not None:
            self.ema = {k[len("trainer.ema."):]: v.clone() for k, v in tensors.items() if k.startswith("trainer.ema.")}
        self.step = int(meta["step"])
        if self.config.time_budget_s:  # the schedule fitted to the budget when the run started
            self.config.n_steps, self.budget_fitted = int(meta["n_steps"]), True
        self.best_val = math.inf if meta["best_val"] is None else float(meta["best_val"])
        self.history = list(meta["history"])

    def _write_log(self):
        with atomic_write(self.log_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)

    # ------------------------------------------------------------------ the loop
    def fit(self, stop_after=None):
        """Train until ``n_steps`` (or ``max_time_s``, ``stop_after`` steps in this call, or
        Ctrl-C: each writes a checkpoint to resume from); returns the log rows and leaves the
        model holding the best weights."""
        c = self.config
        os.makedirs(self.output_dir, exist_ok=True)
        start, first = time.time(), self.step
        elapsed0 = self.history[-1]["elapsed_s"] if self.history else 0.0
        running, count = 0.0, 0
        bar = progress_bar(total=c.n_steps, initial=self.step, desc="train (transferable)", unit="step",
                           disable=not self.progress or self.rank != 0)
        with GracefulStop("writing a checkpoint after this training step (press Ctrl-C again to stop now)") as stop:
            while self.step < c.n_steps:
                lr = self.learning_rate(self.step)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                self.net.train()
                pairs = self._batch(self.step)
                loss = sum(-self.train[m][0].density(_rows(self.train[m][1], idx, self.model.device)).mean()
                           for m, idx in pairs) / len(pairs)
                if not bool(torch.isfinite(loss)):
                    self.net.eval()
                    raise FloatingPointError(f"the training loss became {loss.item()} at step {self.step + 1}; the last "
                                             "checkpoint and best model are intact. Lower learning_rate.")
                optimizer_step(self.net, self.optimizer, loss, c.grad_clip, self.world)  # gradients averaged over processes
                self.net.eval()
                if self.ema is not None:
                    update_ema(self.ema, self.net, c.ema_decay)
                self.step += 1
                if c.time_budget_s and not self.budget_fitted:
                    if self.step == first + 5:  # the first steps pay for warm-up
                        timing_start = time.time()
                    elif self.step == first + 25:
                        self._fit_schedule_to_budget(time.time() - start, (time.time() - timing_start) / 20)
                        bar.total = c.n_steps
                running, count = running + loss.item(), count + 1
                bar.update(1)
                if self.step % c.eval_interval == 0 or self.step == c.n_steps:
                    val = self.validation_nll()
                    self.history.append(dict(step=self.step, lr=lr, train_nll=running / count, val_nll=val,
                                             elapsed_s=round(elapsed0 + time.time() - start, 2)))
                    running, count = 0.0, 0
                    bar.set_postfix(train=f"{self.history[-1]['train_nll']:.4f}", val=f"{val:.4f}")
                    if not self.valid or val < self.best_val:
                        self.best_val = val if math.isfinite(val) else self.best_val
                        if self.rank == 0:
                            self._save_model()
                    if self.rank == 0:
                        self._write_log()
                        self._save_checkpoint()
                stop_now = bool((c.max_time_s and time.time() - start > c.max_time_s) or stop.requested or (
                    stop_after is not None and self.step - first >= stop_after))
                if self.world > 1:  # all processes stop at the same step (any one's reason stops all)
                    import torch.distributed as dist

                    flag = torch.tensor([int(stop_now)])
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stop_now = bool(flag)
                if stop_now:
                    self.interrupted = stop.requested
                    if self.rank == 0:
                        self._save_checkpoint()
                    break
        bar.close()
        if self.rank == 0 and not os.path.exists(self.model_path):
            self._save_model()
        if _is_distributed():
            import torch.distributed as dist

            dist.barrier()  # rank 0 has written the best model before anyone reads it
        best = read_checkpoint(self.model_path)[1]
        self.net.load_state_dict({k[len("network."):]: v for k, v in best.items() if k.startswith("network.")})
        self.net.eval()
        return self.history
