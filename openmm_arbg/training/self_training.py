"""Self-training of an ArBG by importance sampling, with temperature annealing.

MD of a new molecule misses basins; a model trained on it proposes them rarely and badly. Each
round of self-training

1. draws ``n_proposals`` fresh proposals from the current model (optionally at a proposal
   temperature > 1) and computes their energies with OpenMM;
2. weights them exactly against the Boltzmann distribution of the round's temperature,
   ``log w = -U / kT - log q`` (zero for a wrong-handed proposal or a failed energy), and records
   ESS/N, Pareto k, ``log Z`` and the populations of the user's states from these fresh proposals
   only (the learning curve);
3. takes ``n_steps`` maximum-likelihood steps on the weighted proposals of the last
   ``buffer_rounds`` rounds together with any MD frames, each frame reweighted to the round's
   temperature. Minibatches are drawn with probability proportional to the weights (an unbiased
   stochastic gradient of the weighted NLL, i.e. of the forward KL divergence ``KL(pi || q)`` up
   to a constant).

Every sample keeps the exact weight of the proposal that drew it (``pi_T / q_round``), recomputed
for each new temperature from its stored energy, so each group of samples (one round's proposals,
or one MD temperature) is a consistent importance sample of the target; groups are mixed in
proportion to their effective sample sizes (Kish's for proposals; frames over the statistical
inefficiency of the energy for MD), MD taking at most ``md_share`` of the mixture.
``weight_cap`` caps a sample's share of its group in the *training loss* only: the cap stops
binding as the group grows, so the training target stays consistent, and reported numbers never
use capped weights.

Temperature annealing: with ``start_temperature`` above ``temperature``, the first
``anneal_rounds`` rounds follow a geometric ladder from the start to the target temperature (the
model of round ``r`` proposes, its proposals are weighted to ``T_r``, the model is retrained), so
a model trained on high-temperature MD, where nothing is rare, is carried down to the target.

The model that results is an ordinary ArBG: its density is exact by construction, and every
number the package reports comes from fresh proposals and exact weights.
"""

import contextlib
import csv
import hashlib
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..arbg import as_positions_nm
from ..model.checkpoint import read_checkpoint, write_checkpoint
from ..molecule.stereochemistry import equivalent_atom_groups, permute_equivalent_atoms
from ..physics import check_temperature, kT_kJ_per_mol, system_fingerprint
from ..sampling.importance import effective_sample_size, log_partition_function, pareto_k, weighted_mean
from ..utils import Settings, atomic_write
from .trainer import (check_same_settings, holding_weights, load_optimizer_tensors, make_optimizer, optimizer_step,
                      optimizer_tensors, update_ema, warmup_cosine)

__all__ = ["SelfTrainingConfig", "SelfTrainer", "temperature_ladder", "RELIABLE_PARETO_K"]

# A round's ESS/N ranks models only when its weights have a finite variance (Pareto k < 1/2): above
# it, one draw's ESS/N depends on whether a heavy weight fell in it, and keeping the round with the
# largest of several such numbers keeps the luckiest draw, not the best model (Ace-Leu-Nme: a round
# measured at ESS/N 4.35 % with k 0.58 gave 0.01 % and 0.12 % on two new draws of the same size).
RELIABLE_PARETO_K = 0.5


@dataclass
class SelfTrainingConfig(Settings):
    """Self-training settings.

    Parameters
    ----------
    temperature : float
        Target temperature in K.
    start_temperature : float
        First temperature of the annealing ladder in K (0: no annealing, every round at the target).
    anneal_rounds : int
        Rounds spent going down the geometric ladder from ``start_temperature`` to ``temperature``.
    n_rounds : int
        Training rounds in total (annealing included); a last round of fresh proposals measures
        the final model.
    n_proposals : int
        Fresh proposals (energy evaluations) per round.
    proposal_temperature : float
        Softmax temperature of the proposals (> 1 explores more; weights stay exact).
    n_steps : int
        Optimiser steps per round. Keep rounds short: many steps on the few effective samples of
        an early round overfit them (on the analytic chain from an untrained model, 20 steps per
        round took ESS/N from 0.15 % to 54 % in four rounds, 60 steps left it below 1 %; on the
        shipped 300 K + 600 K alanine dipeptide model, four rounds of 5 000 proposals with 50 steps
        at learning rate 5e-4 lowered ESS/N from 9.6 % to 5.8 %, 20 steps at 2e-4 with
        ``stratify`` raised it to 13.1 %, each measured on 20 000 fresh proposals).
    batch_size : int
    learning_rate : float
        Peak learning rate of AdamW (warm-up, then cosine decay over all rounds).
    weight_decay : float
    warmup_steps : int
    min_lr_fraction : float
        The cosine ends at this fraction of ``learning_rate``.
    grad_clip : float
        Gradient-norm clip (0: off).
    buffer_rounds : int
        Rounds of proposals kept for training (the newest ones).
    md_share : float
        The largest share of the training mixture MD frames may take (when proposals have any
        weight). MD that never visited a basin is a confident estimate that the basin is empty;
        mixed by effective size alone it outweighs the proposals and the model unlearns the basin
        (measured on alanine dipeptide: 1 ns of 300 K MD took the C7ax population proposed from
        5.5 % to 0.5 % in four rounds).
    ess_target : float
        Tempering of the training weights: proposals are trained on with weights ``w**alpha``,
        ``alpha`` the largest value in (0, 1] whose ESS among the newest round's proposals is at
        least this fraction of them (0: always ``alpha = 1``). The training target is then
        ``q**(1 - alpha) pi**alpha``, between the model and the Boltzmann distribution: a model
        whose weights are degenerate moves towards the target without collapsing onto its few
        heaviest proposals, and ``alpha`` reaches 1 once the model is good. Training only.
    stratify : bool
        Keep the model's own populations of the states being followed (the ``states`` of
        :class:`SelfTrainer`; each proposal belongs to the first state it is in, or to the rest)
        and learn only the distributions within them: the training weights of a round's proposals
        are normalised (and tempered, ``ess_target``) within each state and the state gets the
        share of the round's proposals it holds. A rare basin that the model proposes badly (small weights) otherwise loses mass in
        every round until it is no longer proposed; with ``stratify`` it keeps the mass while its
        proposals improve, and importance weights correct its population in every estimate.
    weight_cap : float
        If > 0, no sample gets more than this fraction of its group's weight in the training
        loss (training only; see the module docstring). 0: off. It spreads the first rounds'
        training over more samples (the chain above: 54 % -> 78 % with 0.003).
    ema_decay : float
        If > 0, proposals come from (and the saved models hold) an exponential moving average of
        the weights over the optimiser steps, ``ema <- ema_decay * ema + (1 - ema_decay) * w``,
        started from the starting model's weights; the optimiser still steps the raw weights. A
        model trained with EMA (``arbg train --ema-decay``) otherwise continues from its smoothed
        weights with raw, noisier ones. 0: off. The density of the proposals is exact either way.
    seed : int
    """

    temperature: float = 300.0
    start_temperature: float = 0.0
    anneal_rounds: int = 0
    n_rounds: int = 8
    n_proposals: int = 10000
    proposal_temperature: float = 1.0
    n_steps: int = 20
    batch_size: int = 256
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    min_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    buffer_rounds: int = 4
    md_share: float = 0.5
    ess_target: float = 0.1
    stratify: bool = False
    weight_cap: float = 0.003
    ema_decay: float = 0.0
    seed: int = 0

    what = "self-training settings"

    def __post_init__(self):
        minimum = dict(n_rounds=1, n_proposals=2, n_steps=1, batch_size=1, buffer_rounds=1, anneal_rounds=0, warmup_steps=0,
                       seed=0)
        for name, lowest in minimum.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lowest:
                raise ValueError(f"self-training setting {name} must be an integer >= {lowest}; got {v!r}")
        positive = ("temperature", "proposal_temperature", "learning_rate")
        fractions = ("min_lr_fraction", "weight_cap", "md_share", "ess_target", "ema_decay")
        for name in positive + fractions + ("start_temperature", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > 0 if name in positive else v >= 0) and (v <= 1 if name in fractions else True)
            if not ok:
                rule = "> 0" if name in positive else ("in [0, 1]" if name in fractions else ">= 0")
                raise ValueError(f"self-training setting {name} must be a number {rule}; got {v!r}")
        if self.ema_decay >= 1:
            raise ValueError(f"self-training setting ema_decay must be below 1 (0: off); got {self.ema_decay!r}")
        if self.anneal_rounds and not self.start_temperature:
            raise ValueError("anneal_rounds > 0 needs start_temperature (K), the top of the annealing ladder")
        if self.start_temperature and self.start_temperature < self.temperature:
            raise ValueError(f"start_temperature {self.start_temperature} K is below the target temperature "
                             f"{self.temperature} K; annealing goes down from a higher temperature")
        if self.anneal_rounds > self.n_rounds:
            raise ValueError(f"anneal_rounds ({self.anneal_rounds}) must not exceed n_rounds ({self.n_rounds})")

    def schedule_key(self):
        """Settings that must not change when a run is resumed (``n_rounds`` may grow)."""
        d = asdict(self)
        d.pop("n_rounds")
        return d


def temperature_ladder(config):
    """Temperatures in K of rounds ``0 .. n_rounds`` (the last is the final measurement):
    geometric from ``start_temperature`` to ``temperature`` over ``anneal_rounds``, then the target."""
    c = config
    out = []
    for r in range(c.n_rounds + 1):
        if c.start_temperature and c.anneal_rounds and r < c.anneal_rounds:
            out.append(c.start_temperature * (c.temperature / c.start_temperature) ** (r / c.anneal_rounds))
        elif c.start_temperature and not c.anneal_rounds and r == 0:
            out.append(float(c.start_temperature))
        else:
            out.append(float(c.temperature))
    return out


def _statistical_inefficiency(u):
    from pymbar import timeseries

    u = np.asarray(u, dtype=float)
    if len(u) < 10 or np.ptp(u) == 0:
        return 1.0
    try:
        return max(1.0, float(timeseries.statistical_inefficiency(u)))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return 1.0


class SelfTrainer:
    """Self-train an :class:`~openmm_arbg.ArBG` by importance sampling (module docstring).

    Parameters
    ----------
    model : ArBG
        The starting model, usually trained on MD by :class:`~openmm_arbg.training.Trainer`;
        trained in place.
    system : openmm.System
        The target molecule's System (its energies define the Boltzmann distributions).
    config : SelfTrainingConfig or dict
    md : list of (positions, temperature_K), optional
        MD frames (array (n, N, 3) nm or mdtraj.Trajectory, in time order) and the temperature
        they were sampled at; reweighted to every round's temperature.
    states : dict of str -> str or callable, optional
        States whose populations the learning curve follows (:mod:`openmm_arbg.analysis.states`),
        e.g. ``{"C7ax": "phi > 0"}``.
    md_evaluations : int
        Energy evaluations the MD cost (to report the total); 0 if unknown.
    output_dir : str
        ``model.safetensors`` (the starting model, replaced by a round's model at the target
        temperature whose fresh proposals have Pareto k below :data:`RELIABLE_PARETO_K` and, if
        the model kept also had, a larger ESS/N),
        ``last.safetensors``, ``checkpoint.safetensors`` (resumable), ``learning_curve.csv``/``.png``.
    resume : bool
        Continue from ``output_dir/checkpoint.safetensors`` if it exists.
    platform : str, optional
        OpenMM platform for energies (default: the fastest, measured).
    n_workers : int
        Energy worker processes.
    progress : bool
        Progress bars for proposals; a summary line per round is always printed.
    """

    def __init__(self, model, system, config=None, md=None, states=None, md_evaluations=0, output_dir="arbg_self_training",
                 resume=True, platform=None, n_workers=1, progress=True):
        from ..physics import check_target
        from ..sampling.energies import ReducedPotential

        self.model = model
        self.config = config if isinstance(config, SelfTrainingConfig) else SelfTrainingConfig.from_dict(config or {})
        self.output_dir = os.fspath(output_dir)
        self.progress = progress
        check_target(system, model.graph)
        self.system_sha256 = system_fingerprint(system)
        self.potential = ReducedPotential(system, temperature=self.config.temperature, platform=platform, n_workers=n_workers)
        self.temperatures = temperature_ladder(self.config)
        self.states = {}
        if states:
            from ..analysis.states import StateExpression

            self.states = {name: StateExpression(s, model.graph) if isinstance(s, str) else s for name, s in states.items()}
        if self.config.stratify and not self.states:
            raise ValueError("stratify keeps the model's populations of the followed states: give states "
                             "(arbg self-train --state NAME=EXPRESSION)")
        self.state_key = [str(s.expression) if hasattr(s, "expression") else name for name, s in self.states.items()]
        self.md_evaluations = int(md_evaluations)
        self.n_evaluations = 0  # energies computed by self-training (MD frames and proposals)
        self.net = model.density
        self.optimizer = make_optimizer(self.net, self.config.learning_rate, self.config.weight_decay)
        # EMA of the weights (proposals and saved models); the network itself holds the raw weights
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()} if self.config.ema_decay else None
        self.round = 0  # the next round to run
        self.step = 0
        self.history = []
        self.best_ess = -1.0  # ESS/N of the kept model's round (-1: none kept yet)
        self.best_reliable = False  # whether that round's weights had Pareto k < RELIABLE_PARETO_K
        self.buffer = []  # dicts: z (n, D) float64 tensor, energy (n,) kJ/mol, log_q (n,), temperature
        self.interrupted = None
        self._md_groups(md or [])
        self.checkpoint_path = os.path.join(self.output_dir, "checkpoint.safetensors")
        self.model_path = os.path.join(self.output_dir, "model.safetensors")
        self.last_path = os.path.join(self.output_dir, "last.safetensors")
        self.log_path = os.path.join(self.output_dir, "learning_curve.csv")
        if resume and os.path.exists(self.checkpoint_path):
            self._load_checkpoint()

    # ------------------------------------------------------------------ data
    def _md_groups(self, md):
        """MD frames as training groups: model coordinates, energies (kJ/mol) and temperature."""
        self.md = []
        digest = hashlib.sha256()
        groups = [g for g in equivalent_atom_groups(self.model.graph) if g[0] not in self.model.stereo.centers]
        for k, item in enumerate(md):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError("md must be a list of (positions, temperature_K) pairs")
            positions, temperature = item
            temperature = check_temperature(float(temperature), "MD temperature")
            x = as_positions_nm(positions, self.model.n_atoms, self.model.graph, "MD positions")
            x = permute_equivalent_atoms(x, groups, rng=self.config.seed + k)
            outside = ~self.model.in_support(x)  # what log_prob(x) = -inf says, without the network
            if outside.all():
                raise ValueError(f"every MD frame of group {k} ({temperature} K) lies outside the model's support (its bins "
                                 "were fitted to other data); pass the frames the model was trained on")
            if outside.any():
                warnings.warn(f"{outside.sum()} of {len(x)} MD frames at {temperature} K lie outside the model's support "
                              "and are left out of training", stacklevel=3)
            x = x[~outside]
            energy = self.potential.energies(x)
            self.n_evaluations += len(x)
            keep = np.isfinite(energy)
            with torch.no_grad():
                z, _ = self.model.representation.to_model_coordinates(torch.as_tensor(x[keep]))
            g = _statistical_inefficiency(energy[keep])
            self.md.append(dict(z=z, energy=energy[keep], temperature=temperature, inefficiency=g))
            digest.update(np.ascontiguousarray(z.numpy()).tobytes())
            digest.update(repr(temperature).encode())
        self.md_hash = digest.hexdigest()[:16]

    def tempering_exponent(self, temperature, stratum=None):
        """``alpha`` of ``ess_target`` for the newest proposals weighted at ``temperature`` (those
        in one stratum, with ``stratify``: each state gets its own ``alpha``)."""
        if not self.buffer or not self.config.ess_target:
            return 1.0
        g = self.buffer[-1]
        log_w = np.where(np.isfinite(g["energy"]), -g["energy"] / kT_kJ_per_mol(temperature) - g["log_q"], -np.inf)
        if stratum is not None:
            log_w = log_w[g["stratum"] == stratum]
            if not np.isfinite(log_w).any():
                return 1.0
        target = self.config.ess_target * len(log_w)
        if effective_sample_size(log_w) >= target:
            return 1.0
        lo, hi = 0.0, 1.0  # ESS(alpha * log w) falls from the number of valid proposals at alpha = 0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if effective_sample_size(mid * log_w) >= target else (lo, mid)
        return max(lo, 1e-6)

    def _group_log_weights(self, temperature):
        """(z, log probability of being drawn into a training batch, effective sizes) over every
        group, with proposals' weights tempered by :meth:`tempering_exponent`."""
        beta = 1.0 / kT_kJ_per_mol(temperature)
        alpha = self.tempering_exponent(temperature)
        if self.config.stratify:  # one alpha per stratum (state), so each state's weights are spread too
            alphas = np.array([self.tempering_exponent(temperature, k) for k in range(len(self.states) + 1)])
        zs, parts, sizes = [], [], []
        for g in self.buffer:
            log_w = np.where(np.isfinite(g["energy"]), -beta * g["energy"] - g["log_q"], -np.inf)
            log_w = log_w * (alphas[g["stratum"]] if self.config.stratify else alpha)
            zs.append(g["z"])
            parts.append(log_w)
            sizes.append(effective_sample_size(log_w))
        for g in self.md:
            log_w = -(beta - 1.0 / kT_kJ_per_mol(g["temperature"])) * g["energy"]
            zs.append(g["z"])
            parts.append(log_w)
            sizes.append(effective_sample_size(log_w) / g["inefficiency"])
        n_proposal_groups = len(self.buffer)
        proposals, md = sum(sizes[:n_proposal_groups]), sum(sizes[n_proposal_groups:])
        share = self.config.md_share
        if proposals > 0 and md > 0 and md / (md + proposals) > share:  # MD scaled down to exactly md_share
            scale = share / (1 - share) * proposals / md
            sizes = sizes[:n_proposal_groups] + [s * scale for s in sizes[n_proposal_groups:]]
        total = sum(sizes)
        if total <= 0:
            raise ValueError(f"no training sample has a nonzero weight at {temperature:.1f} K: every proposal was wrong-handed "
                             "or failed its energy; start from a model trained on MD of this molecule")
        log_p = []
        for i, (log_w, ess) in enumerate(zip(parts, sizes)):
            if ess <= 0:
                log_p.append(np.full(len(log_w), -np.inf))
                continue
            w = np.exp(log_w - np.max(log_w[np.isfinite(log_w)]))
            w /= w.sum()
            if self.config.weight_cap:  # before the strata: a cap after them would move mass between states
                w = np.minimum(w, self.config.weight_cap)
                w /= w.sum()
            if self.config.stratify and i < n_proposal_groups:  # the model's own state populations
                valid = np.isfinite(log_w)
                stratum = self.buffer[i]["stratum"]
                for k in np.unique(stratum[valid]):
                    members = valid & (stratum == k)
                    mass = w[members].sum()
                    share = members.sum() / valid.sum()
                    w[members] = w[members] / mass * share if mass > 0 else share / members.sum()
            with np.errstate(divide="ignore"):
                log_p.append(np.log(w) + math.log(ess / total))
        return torch.cat(zs), np.concatenate(log_p), dict(zip(range(len(sizes)), sizes))

    # ------------------------------------------------------------------ one round
    @torch.no_grad()
    def _draw(self, n, seed):
        """``n`` proposals: model coordinates, positions (nm) and log q of the positions."""
        from ..utils import progress_bar

        generator = torch.Generator(device=self.model.device).manual_seed(seed)
        zs, xs, lqs = [], [], []
        for s in progress_bar(range(0, n, 1024), desc="propose", unit="batch", disable=not self.progress):
            z, log_qz = self.net.sample(min(1024, n - s), self.config.proposal_temperature, generator)
            x, log_volume = self.model.representation.from_model_coordinates(z.cpu())
            zs.append(z.cpu())
            xs.append(x.numpy())
            lqs.append((log_qz.cpu() - log_volume).numpy())
        return torch.cat(zs), np.concatenate(xs), np.concatenate(lqs)

    def _measure(self, temperature):
        """Fresh proposals of the current model weighted at ``temperature``: a learning-curve row."""
        t0 = time.time()
        z, x, log_q = self._draw(self.config.n_proposals, self.config.seed * 1_000_003 + self.round)
        valid = self.model.check_stereo(x)
        energy = np.full(len(x), np.inf)
        if valid.any():
            energy[valid] = self.potential.energies(x[valid])
            self.n_evaluations += int(valid.sum())
        beta = 1.0 / kT_kJ_per_mol(temperature)
        log_w = np.where(np.isfinite(energy), -beta * energy - log_q, -np.inf)
        ess = effective_sample_size(log_w)
        log_z, log_z_err = log_partition_function(log_w)
        row = dict(
            round=self.round,
            temperature_K=round(temperature, 3),
            step=self.step,
            energy_evaluations=self.n_evaluations + self.md_evaluations,
            ess_fraction=ess / len(x),
            pareto_k=pareto_k(log_w),
            wrong_handed_fraction=float(1 - valid.mean()),
            log_z=log_z,
            log_z_error=log_z_err,
        )
        masks = {name: np.asarray(state(x), dtype=bool).reshape(-1) for name, state in self.states.items()}
        for name, mask in masks.items():
            mask = mask.astype(float)
            row[f"P({name})"] = float(np.mean(mask))  # raw fraction of proposals in the state
            if ess > 0:
                p, dp = weighted_mean(mask, log_w, rng=self.config.seed + self.round)
                row[f"P_{name}"], row[f"P_{name}_error"] = float(p), float(dp)
            else:
                row[f"P_{name}"], row[f"P_{name}_error"] = math.nan, math.nan
        row["measure_s"] = round(time.time() - t0, 2)
        return row, dict(z=z, energy=energy, log_q=log_q, temperature=temperature, stratum=self._strata(masks, len(x)))

    @staticmethod
    def _strata(masks, n):
        """Index of the first followed state each configuration is in (``len(masks)``: none), from
        the states' masks."""
        out = np.full(n, len(masks), dtype=np.int64)
        for k, mask in reversed(list(enumerate(masks.values()))):
            out[mask] = k
        return out

    def learning_rate(self, step):
        c = self.config
        return warmup_cosine(step, c.learning_rate, c.warmup_steps, c.n_rounds * c.n_steps, c.min_lr_fraction)

    def _train_round(self, temperature, stop):
        """``n_steps`` optimiser steps on batches drawn in proportion to the training weights."""
        c = self.config
        z_all, log_p, _ = self._group_log_weights(temperature)
        p = torch.as_tensor(np.exp(log_p - np.max(log_p)))
        generator = torch.Generator().manual_seed(c.seed * 7919 + self.round)
        total = 0.0
        for k in range(c.n_steps):
            lr = self.learning_rate(self.step)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            idx = torch.multinomial(p, c.batch_size, replacement=True, generator=generator)
            self.net.train()
            loss = -self.net(z_all[idx].to(self.model.device)).mean()
            if not bool(torch.isfinite(loss)):
                self.net.eval()
                raise FloatingPointError(f"the self-training loss became {loss.item()} in round {self.round}; the last "
                                         f"checkpoint ({self.checkpoint_path}) is intact. Lower learning_rate.")
            optimizer_step(self.net, self.optimizer, loss, c.grad_clip)
            self.net.eval()
            if self.ema is not None:
                update_ema(self.ema, self.net, c.ema_decay)
            self.step += 1
            total += loss.item()
            if stop.requested:
                break
        return total / max(1, k + 1)

    # ------------------------------------------------------------------ storage
    def _save_checkpoint(self):
        tensors = self.model.network_tensors()
        tensors.update(optimizer_tensors(self.optimizer))
        for i, g in enumerate(self.buffer):
            tensors[f"buffer.{i}.z"] = g["z"]
            tensors[f"buffer.{i}.energy"] = torch.as_tensor(g["energy"])
            tensors[f"buffer.{i}.log_q"] = torch.as_tensor(g["log_q"])
            tensors[f"buffer.{i}.stratum"] = torch.as_tensor(g["stratum"])
        for k, v in (self.ema or {}).items():
            tensors[f"self_training.ema.{k}"] = v
        tensors["trainer.rng.torch"] = torch.get_rng_state()  # dropout
        config = self.model.checkpoint_config()
        config["self_training"] = dict(
            round=self.round,
            step=self.step,
            schedule=self.config.schedule_key(),
            md_hash=self.md_hash,
            system_sha256=self.system_sha256,
            states=self.state_key,
            n_evaluations=self.n_evaluations,
            best_ess=self.best_ess,
            best_reliable=self.best_reliable,
            history=self.history,
            buffer_temperatures=[g["temperature"] for g in self.buffer],
            param_groups=[{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.state_dict()["param_groups"]],
        )
        write_checkpoint(self.checkpoint_path, config, tensors)

    def _load_checkpoint(self):
        config, tensors = read_checkpoint(self.checkpoint_path)
        meta = config.get("self_training")
        where = self.checkpoint_path
        if meta is None:
            raise ValueError(f"{where} is not a self-training checkpoint; use another output folder")
        if config["molecule"]["fingerprint"] != self.model.fingerprint():
            raise ValueError(f"{where} belongs to another molecule; use another output folder")
        mine = self.model.checkpoint_config()
        if config["molecule"]["representation"] != mine["molecule"]["representation"] or config["network"] != mine["network"]:
            raise ValueError(f"{where} was written for another model (representation or network); start from the same model "
                             "or use another output folder")
        # a checkpoint from before a setting existed ran with its default
        saved = dict({"ema_decay": 0.0}, **meta["schedule"])
        check_same_settings(where, saved, self.config.schedule_key(), "self-training settings")
        if self.config.stratify and meta.get("states") != self.state_key:
            raise ValueError(f"{where} was written following other states ({meta.get('states')}); stratify needs the same "
                             "states to resume")
        if meta["md_hash"] != self.md_hash:
            raise ValueError(f"{where} was written with other MD frames; resume with the same trajectories")
        if meta.get("system_sha256", self.system_sha256) != self.system_sha256:  # checkpoints before it: not checked
            raise ValueError(f"{where} was written against another OpenMM System (force field or molecule); resume with the "
                             "same --system, or use another output folder")
        self.model.load_network_weights(tensors)
        load_optimizer_tensors(self.optimizer, tensors, meta["param_groups"])
        self.buffer = [
            dict(z=tensors[f"buffer.{i}.z"], energy=tensors[f"buffer.{i}.energy"].numpy(), log_q=tensors[f"buffer.{i}.log_q"].numpy(),
                 stratum=tensors[f"buffer.{i}.stratum"].numpy(), temperature=t)
            for i, t in enumerate(meta["buffer_temperatures"])
        ]
        if self.ema is not None:
            self.ema = {k[len("self_training.ema."):]: v.clone() for k, v in tensors.items() if k.startswith("self_training.ema.")}
        torch.set_rng_state(tensors["trainer.rng.torch"])
        self.round, self.step = int(meta["round"]), int(meta["step"])
        self.n_evaluations = int(meta["n_evaluations"])
        self.best_ess = float(meta["best_ess"])
        self.best_reliable = bool(meta.get("best_reliable", True))  # checkpoints before it compared ESS/N alone
        self.history = list(meta["history"])

    def _write_log(self):
        names = []
        for row in self.history:
            names += [k for k in row if k not in names]
        with atomic_write(self.log_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=names)
            writer.writeheader()
            writer.writerows(self.history)
        try:
            self.plot(os.path.join(self.output_dir, "learning_curve.png"))
        except Exception as exc:  # a figure is never worth the run
            warnings.warn(f"learning_curve.png not written: {exc}", stacklevel=2)

    def plot(self, path):
        """Learning curves against energy evaluations: ESS/N, and each state's population with
        its error (weighted by the round's temperature; the target's rounds are filled)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.history
        n_panels = 1 + len(self.states)
        fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.4), squeeze=False)
        x = np.array([r["energy_evaluations"] for r in rows], dtype=float)
        at_target = np.array([abs(r["temperature_K"] - self.config.temperature) < 1e-6 for r in rows])
        ax = axes[0, 0]
        ess = np.array([100 * r["ess_fraction"] for r in rows])
        ax.plot(x, ess, "-", color="0.6")
        ax.plot(x[at_target], ess[at_target], "o", color="C0", label=f"{self.config.temperature:g} K")
        ax.plot(x[~at_target], ess[~at_target], "o", mfc="none", color="C0", label="annealing")
        ax.set(xlabel="energy evaluations", ylabel="ESS/N (%)", title="fresh proposals")
        ax.legend(fontsize=8)
        for ax, name in zip(axes[0, 1:], self.states):
            p = np.array([100 * r.get(f"P_{name}", np.nan) for r in rows])
            dp = np.array([100 * r.get(f"P_{name}_error", np.nan) for r in rows])
            ax.errorbar(x[at_target], p[at_target], dp[at_target], fmt="o", color="C1")
            ax.errorbar(x[~at_target], p[~at_target], dp[~at_target], fmt="o", mfc="none", color="C1")
            ax.set(xlabel="energy evaluations", ylabel=f"P({name}) (%)", title=f"{name}, importance sampling")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    def _report(self, row):
        """One line per round (also without progress bars: it is the run's log)."""
        states = "".join(f", P({n}) {100 * row[f'P_{n}']:.2f} ± {100 * row[f'P_{n}_error']:.2f} %" for n in self.states)
        what = "final" if row["round"] == self.config.n_rounds else f"round {row['round']}"
        trained = row.get("train_nll")  # the final measurement trains no more
        training = (f"; training alpha {row.get('alpha', math.nan):.3f}, NLL {trained:.4f}"
                    if trained is not None and math.isfinite(trained) else "")
        print(f"{what} at {row['temperature_K']:.1f} K: ESS/N {100 * row['ess_fraction']:.2f} %, Pareto k {row['pareto_k']:.2f}"
              f"{states}{training}; {row['energy_evaluations']} energy evaluations", flush=True)

    # ------------------------------------------------------------------ the loop
    def _proposing(self):
        """The weights proposals come from, for the block: the EMA weights if kept, else the network's."""
        return holding_weights(self.net, self.ema) if self.ema is not None else contextlib.nullcontext()

    @staticmethod
    def _reliable(row):
        return math.isfinite(row["pareto_k"]) and row["pareto_k"] < RELIABLE_PARETO_K

    def _keeps(self, row):
        """Whether a round's model (measured at the target temperature) replaces the one kept: the
        first one measured is kept; later, only a round with reliable weights replaces it, and
        only by a larger ESS/N where the kept one was reliable too."""
        if self.best_ess < 0:
            return True
        if not self._reliable(row):
            return False
        return not self.best_reliable or row["ess_fraction"] > self.best_ess

    def fit(self, stop_after=None):
        """Run the rounds left (and the final measurement); returns the history (list of dict).

        ``stop_after`` rounds in this call: stop there with a checkpoint, as an interruption would.
        """
        from ..utils import GracefulStop

        os.makedirs(self.output_dir, exist_ok=True)
        c = self.config
        done_here = 0
        self.interrupted = None
        stop = GracefulStop("writing a checkpoint after this round's training step (press Ctrl-C again to stop now)")
        with stop:
            while self.round <= c.n_rounds:
                temperature = self.temperatures[self.round]
                t0 = time.time()
                with self._proposing():
                    row, fresh = self._measure(temperature)
                    at_target = abs(temperature - c.temperature) < 1e-6
                    if at_target and self._keeps(row):
                        self.best_ess = row["ess_fraction"]
                        self.best_reliable = self._reliable(row)
                        self.model.metadata["self_training"] = dict(config=asdict(c), round=self.round,
                                                                    ess_fraction=row["ess_fraction"],
                                                                    energy_evaluations=row["energy_evaluations"])
                        self.model.save(self.model_path)
                    if self.round == c.n_rounds:  # the final measurement: no training
                        self.model.save(self.last_path)
                if self.round == c.n_rounds:
                    row.update(train_nll=math.nan, elapsed_s=round(time.time() - t0, 2))
                    self.history.append(row)
                    self._write_log()
                    self._report(row)
                    break
                self.buffer = (self.buffer + [fresh])[-c.buffer_rounds:]
                row["alpha"] = self.tempering_exponent(temperature)
                if c.stratify:
                    for k, name in enumerate(list(self.states) + ["rest"]):
                        row[f"alpha_{name}"] = self.tempering_exponent(temperature, k)
                row["train_nll"] = self._train_round(temperature, stop)
                row["elapsed_s"] = round(time.time() - t0, 2)
                self.history.append(row)
                self.round += 1
                self._save_checkpoint()
                self._write_log()
                self._report(row)
                done_here += 1
                if stop.requested:
                    self.interrupted = stop.requested
                    break
                if stop_after is not None and done_here >= stop_after:
                    break
        if not os.path.exists(self.model_path):  # the target was never reached (annealing cut short)
            with self._proposing():
                self.model.save(self.model_path)
        if self.round == c.n_rounds and not self.interrupted:  # done: leave the model holding the best weights
            self.model.load_network_weights(read_checkpoint(self.model_path)[1])
            self.model.eval()
        return self.history
