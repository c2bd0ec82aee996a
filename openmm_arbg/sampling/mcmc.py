"""``ArBGMove``: an exact independence Metropolis-Hastings move for openmmtools samplers.

Each attempt proposes a whole conformation ``x'`` drawn from the model, placed in the current
state's rigid-body frame (same anchor position and orientation), and accepts it with

    log alpha = [-u(x') - log q(x')] - [-u(x) - log q(x)]

where ``u`` is the reduced potential of the sampler's ThermodynamicState (any temperature) and
``log q`` the model's exact log density. Keeping the rigid-body coordinates fixed is a valid block
update because the target is uniform in them; that holds only for Systems whose energy is
invariant under rigid motion, so constrained, periodic and position-restrained Systems are
refused. Proposals with the wrong stereochemistry are rejected, failed or NaN energies are
rejected, velocities are left as they are.

Partial resampling (``cuts``): an attempt draws a cut ``k`` from a fixed distribution
(independent of the state), keeps the first ``k`` model coordinates of the current state and
redraws the rest from the model's exact conditional, ``z'_>=k ~ q(. | z_<k)``, and accepts with

    log alpha = [-u(x') - log q_k(x')] - [-u(x) - log q_k(x)],
    log q_k(x) = log q(z_>=k | z_<k) - log|J(z)|   (``ArBG.log_prob(x, start=k)``),

which is the Metropolis-Hastings ratio ``pi(z') q(z_>=k | z_<k) / (pi(z) q(z'_>=k | z_<k))`` with the
target's Jacobian ``|J|`` moved into ``log q_k``. A cut of 0 is the whole-molecule move.

Mix with ``openmmtools.mcmc.LangevinDynamicsMove`` in a ``SequenceMove`` or ``WeightedMove``:

>>> move = SequenceMove([LangevinDynamicsMove(n_steps=500), ArBGMove("model.safetensors")])  # doctest: +SKIP

Random numbers come from numpy's global generator, as in openmmtools' own Metropolized moves:
seed it with ``numpy.random.seed`` for reproducible runs.
"""

import hashlib
import logging
import math
import os

import numpy as np
import openmm
import openmm.unit as unit
from openmmtools.mcmc import MCMCMove

from ..arbg import ArBG
from ..model.density import check_proposal_temperature
from ..utils import file_sha256
from ..physics import check_target

__all__ = ["ArBGProposal", "ArBGMove"]

logger = logging.getLogger(__name__)

_MODEL_CACHE = {}  # (path, sha256) -> ArBG: deep copies of a move share the loaded model
_HASH_CACHE = {}  # (path, mtime_ns, size) -> sha256


def _hash_text(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _hash(path):
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = file_sha256(path)
    return _HASH_CACHE[key]


def _load_model(path, sha256=None):
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ArBG model file {path} not found. A stored ArBGMove refers to its model by path; put the file back "
            "(the same content) to resume."
        )
    digest = _hash(path)
    if sha256 is not None and digest != sha256:
        raise ValueError(
            f"the model file {path} has changed since the move was created (SHA-256 {digest[:12]}... instead of "
            f"{sha256[:12]}...); resuming with another model would mix two Markov chains. Restore the original file."
        )
    key = (path, digest)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = ArBG.load(path)
    return _MODEL_CACHE[key], path, digest


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


class ArBGProposal:
    """Independent whole-molecule proposals from an ArBG, with their exact log densities.

    Draws proposals in batches (``buffer_size``) and hands them out one at a time, so the network
    runs rarely and energies can be computed in batches. Buffered proposals are never reused: a
    copy of the proposal starts with an empty buffer.

    Parameters
    ----------
    model : ArBG or str
        A model loaded from a file (``ArBG.load``) or the path of a saved model.
    proposal_temperature : float
        Softmax temperature of the proposal (``log q`` is that of the tempered model).
    buffer_size : int
        Proposals drawn per network call (>= 1). Generation on the CPU is fastest per proposal
        at about 1024 with one torch thread and 2048 with two (``docs/benchmarks.md`` section 3).
    """

    def __init__(self, model, proposal_temperature=1.0, buffer_size=1024):
        if isinstance(model, ArBG):
            path = getattr(model, "checkpoint_path", None)
            if path is None:
                raise ValueError(
                    "ArBGMove needs a model saved to a file: openmmtools samplers store and copy moves by reference "
                    "to the model file. Call model.save('model.safetensors') and pass the path (or ArBG.load it)."
                )
            self.model, self.model_path, self.model_sha256 = model, os.path.abspath(path), _hash(os.path.abspath(path))
            _MODEL_CACHE.setdefault((self.model_path, self.model_sha256), model)
        else:
            self.model, self.model_path, self.model_sha256 = _load_model(model)
        check_proposal_temperature(proposal_temperature)
        self.proposal_temperature = float(proposal_temperature)
        self.buffer_size = _positive_int(buffer_size, "buffer_size")
        self._buffer = None
        self._position = 0

    def _refill(self):
        seed = int(np.random.randint(0, 2**62))
        x, log_q = self.model.sample(self.buffer_size, proposal_temperature=self.proposal_temperature, seed=seed)
        self._buffer = (x, log_q, self.model.check_stereo(x))
        self._position = 0

    def propose(self, n, like):
        """``n`` proposals placed in the frame of ``like`` (N, 3) nm.

        Returns
        -------
        positions : numpy.ndarray (n, N, 3) nm
        log_q : numpy.ndarray (n,)
        right_handed : numpy.ndarray of bool (n,)
            False where a stereocentre has the wrong handedness (such proposals must be rejected).
        """
        xs, lqs, oks = [], [], []
        while n > 0:
            if self._buffer is None or self._position >= len(self._buffer[0]):
                self._refill()
            take = min(n, len(self._buffer[0]) - self._position)
            s = slice(self._position, self._position + take)
            xs.append(self._buffer[0][s])
            lqs.append(self._buffer[1][s])
            oks.append(self._buffer[2][s])
            self._position += take
            n -= take
        x = np.concatenate(xs)
        return self.model.place(x, like), np.concatenate(lqs), np.concatenate(oks)

    def log_prob(self, positions, start=0):
        """Exact log density of the proposal at ``positions`` (n, N, 3) nm; with ``start=k`` that
        of the coordinates from ``k`` on given the others (see :meth:`ArBG.log_prob`)."""
        return self.model.log_prob(positions, proposal_temperature=self.proposal_temperature, start=start)

    def propose_partial(self, like, cut):
        """One proposal that keeps the first ``cut`` model coordinates of ``like`` (N, 3) nm and
        redraws the rest; returns positions (1, N, 3) placed in ``like``'s frame, the conditional
        ``log_prob(x', start=cut)`` (1,) and the stereochemistry mask (1,)."""
        z, _ = self.model.to_model_coordinates(like[None])
        seed = int(np.random.randint(0, 2**62))
        x, log_q = self.model.sample(
            1, proposal_temperature=self.proposal_temperature, seed=seed, prefix=z[0, :cut].numpy()
        )
        return self.model.place(x, like), log_q, self.model.check_stereo(x)

    def __getstate__(self):
        return dict(model_path=self.model_path, model_sha256=self.model_sha256, proposal_temperature=self.proposal_temperature, buffer_size=self.buffer_size)

    def __setstate__(self, state):
        self.model, self.model_path, self.model_sha256 = _load_model(state["model_path"], state.get("model_sha256"))
        self.proposal_temperature = float(state.get("proposal_temperature", state.get("temperature", 1.0)))
        self.buffer_size = int(state.get("buffer_size", 256))
        self._buffer = None
        self._position = 0


class ArBGMove(MCMCMove):
    """Independence Metropolis-Hastings move with ArBG proposals (an openmmtools ``MCMCMove``).

    Parameters
    ----------
    model : ArBG or str
        A model loaded from a file, or the path of a saved model (``.safetensors``).
    n_attempts : int
        Metropolis-Hastings attempts per ``apply``; their energies are computed in one batch.
    proposal_temperature : float
        Softmax temperature of the proposal (exact at any value; > 1 broadens the proposal).
    buffer_size : int
        Proposals drawn from the network per call.
    cuts : sequence of int, optional
        Partial resampling: each attempt keeps the first ``k`` model coordinates, ``k`` drawn
        from ``cuts`` (0 <= k < number of model coordinates; 0 redraws the whole molecule).
        Default: whole-molecule proposals only.
    cut_probabilities : sequence of float, optional
        Probabilities of ``cuts`` (default uniform).
    recycle : bool
        Keep every whole-molecule proposal (accepted or not) with its ``log q`` and reduced
        potential: they are i.i.d. draws from the model whatever the chain does, so
        :meth:`recycled_result` weighs them as plain importance sampling (waste recycling; see
        ``docs/design.md``). Partial proposals depend on the state and are not kept.
    n_workers : int
        Worker processes for the energies of the ``n_attempts`` whole-molecule proposals
        (:class:`~openmm_arbg.sampling.energies.ReducedPotential`, on the platform of the
        sampler's Context). ``1`` computes them one after another in the sampler's Context. The
        pool is used for plain NVT ``ThermodynamicState`` objects; other states (a barostat,
        compound states with alchemical parameters) always use the Context, which knows them.

    Attributes
    ----------
    n_accepted, n_proposed : int
    n_wrong_stereo : int
        Proposals rejected because a stereocentre had the wrong handedness.
    n_failed_energy : int
        Proposals rejected because OpenMM returned NaN/inf or raised.
    statistics : dict
        The counters above (openmmtools synchronises these across MPI ranks).
    """

    def __init__(self, model, n_attempts=1, proposal_temperature=1.0, buffer_size=1024, cuts=None, cut_probabilities=None,
                 recycle=False, n_workers=1):
        super().__init__()
        self.proposal = ArBGProposal(model, proposal_temperature=proposal_temperature, buffer_size=buffer_size)
        self.n_attempts = _positive_int(n_attempts, "n_attempts")
        self._set_cuts(cuts, cut_probabilities)
        self.recycle = bool(recycle)
        self._recycled = []
        self.n_workers = _positive_int(n_workers, "n_workers")
        self._pools = {}
        self.n_accepted = 0
        self.n_proposed = 0
        self.n_wrong_stereo = 0
        self.n_failed_energy = 0

    @property
    def model(self):
        return self.proposal.model

    @property
    def acceptance_rate(self):
        return self.n_accepted / self.n_proposed if self.n_proposed else math.nan

    @property
    def statistics(self):
        return dict(
            n_accepted=self.n_accepted,
            n_proposed=self.n_proposed,
            n_wrong_stereo=self.n_wrong_stereo,
            n_failed_energy=self.n_failed_energy,
        )

    @statistics.setter
    def statistics(self, value):
        self.n_accepted = int(value.get("n_accepted", 0))
        self.n_proposed = int(value.get("n_proposed", 0))
        self.n_wrong_stereo = int(value.get("n_wrong_stereo", 0))
        self.n_failed_energy = int(value.get("n_failed_energy", 0))

    def _set_cuts(self, cuts, cut_probabilities):
        if cuts is None:
            if cut_probabilities is not None:
                raise ValueError("cut_probabilities needs cuts")
            self.cuts, self.cut_probabilities = None, None
            return
        D = self.model.n_coords
        cuts = [int(k) for k in np.atleast_1d(cuts)]
        if not cuts or any(not 0 <= k < D for k in cuts):
            raise ValueError(f"cuts must be model-coordinate indices in [0, {D}); got {cuts}")
        if cut_probabilities is None:
            p = np.full(len(cuts), 1.0 / len(cuts))
        else:
            p = np.asarray(cut_probabilities, dtype=float)
            if p.shape != (len(cuts),) or not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1) > 1e-9:
                raise ValueError("cut_probabilities must be one non-negative probability per cut, summing to 1")
        self.cuts, self.cut_probabilities = cuts, [float(v) for v in p]

    def reset_statistics(self):
        self.statistics = {}

    def _record(self, positions, log_q, u, valid):
        if self.recycle:
            self._recycled.append((np.asarray(positions, dtype=np.float32), np.asarray(log_q, dtype=float),
                                   np.asarray(u, dtype=float), np.asarray(valid, dtype=bool)))

    def pop_recycled(self):
        """The whole-molecule proposals kept since the last call (``recycle=True``), and forget them.

        Returns
        -------
        dict
            ``positions`` (m, N, 3) float32 nm, ``log_q`` (m,), ``reduced_potentials`` (m,) kT
            (+inf for wrong-handed or failed proposals) and ``valid`` (m,) bool.
        """
        parts, self._recycled = self._recycled, []
        n_atoms = self.model.n_atoms
        if not parts:
            return dict(positions=np.zeros((0, n_atoms, 3), np.float32), log_q=np.zeros(0), reduced_potentials=np.zeros(0),
                        valid=np.zeros(0, bool))
        x, lq, u, ok = (np.concatenate(a) for a in zip(*parts))
        return dict(positions=x, log_q=lq, reduced_potentials=u, valid=ok)

    @staticmethod
    def recycled_result(recycled):
        """Importance weights ``-u - log q`` of recycled proposals (the dict of :meth:`pop_recycled`,
        or several concatenated): an :class:`~openmm_arbg.sampling.importance.ImportanceSamplingResult`
        whose estimates and bootstrap errors are those of plain importance sampling with as many
        proposals, at no extra energy evaluation."""
        from .importance import ImportanceSamplingResult, log_importance_weights

        log_w = log_importance_weights(recycled["reduced_potentials"], recycled["log_q"], recycled["valid"])
        return ImportanceSamplingResult(np.asarray(recycled["positions"], dtype=np.float64), recycled["log_q"],
                                        recycled["reduced_potentials"], recycled["valid"], log_w)

    def _check_state(self, thermodynamic_state, system):
        """Refuse states for which the move is not exact. Runs on every apply (it costs
        microseconds): a cache keyed on the System object would let a changed System through."""
        temperature = thermodynamic_state.temperature.value_in_unit(unit.kelvin)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"the thermodynamic state's temperature must be positive; got {temperature} K")
        check_target(system, self.model.graph)

    @staticmethod
    def _reduced_potential(thermodynamic_state, context):
        try:
            u = thermodynamic_state.reduced_potential(context)
        except Exception:  # OpenMM raises for NaN coordinates or failing custom forces
            return math.inf
        return u if math.isfinite(u) else math.inf

    def apply(self, thermodynamic_state, sampler_state, context_cache=None):
        """Apply ``n_attempts`` independence Metropolis-Hastings steps to ``sampler_state``.

        Parameters
        ----------
        thermodynamic_state : openmmtools.states.ThermodynamicState
        sampler_state : openmmtools.states.SamplerState
            Positions are updated in place; velocities are kept.
        context_cache : openmmtools.cache.ContextCache, optional
        """
        context_cache = self._get_context_cache(context_cache)
        context, _ = context_cache.get_context(thermodynamic_state)
        self._check_state(thermodynamic_state, context.getSystem())

        x = np.asarray(sampler_state.positions.value_in_unit(unit.nanometer), dtype=np.float64)
        sampler_state.apply_to_context(context, ignore_velocities=True)
        u_current = self._reduced_potential(thermodynamic_state, context)
        if self.cuts is not None:
            self._apply_partial(thermodynamic_state, sampler_state, context, x, u_current)
            return
        log_q_current = float(self.proposal.log_prob(x[None])[0])

        proposals, log_q, right_handed = self.proposal.propose(self.n_attempts, x)
        u_prop = self._proposal_energies(thermodynamic_state, context, proposals, right_handed)
        self.n_wrong_stereo += int((~right_handed).sum())
        self.n_failed_energy += int((right_handed & ~np.isfinite(u_prop)).sum())
        self._record(proposals, log_q, u_prop, right_handed)

        accepted_index = None
        for i in range(self.n_attempts):
            self.n_proposed += 1
            if not right_handed[i] or not math.isfinite(u_prop[i]):
                continue
            log_alpha = (-u_prop[i] - log_q[i]) - (-u_current - log_q_current)
            if not math.isfinite(u_current) or np.log(np.random.random()) < log_alpha:
                accepted_index = i
                u_current, log_q_current = u_prop[i], log_q[i]
                self.n_accepted += 1
        if accepted_index is not None:
            sampler_state.positions = proposals[accepted_index] * unit.nanometer
        sampler_state.apply_to_context(context, ignore_velocities=True)

    def _energy_pool(self, thermodynamic_state, context):
        """The worker pool for this state's System (NVT ``ThermodynamicState`` only), or None.
        Pools are kept per (System, platform), not per temperature: replicas that swap
        temperatures (parallel tempering) reuse one pool."""
        from openmmtools.states import ThermodynamicState

        from .energies import ReducedPotential

        if self.n_workers == 1 or type(thermodynamic_state) is not ThermodynamicState or thermodynamic_state.pressure is not None:
            return None
        key = getattr(thermodynamic_state, "_standard_system_hash", None)
        if key is None:  # openmmtools without the cached hash: hash the System itself (slower)
            key = _hash_text(openmm.XmlSerializer.serialize(context.getSystem()))
        key = (key, context.getPlatform().getName())
        if key not in self._pools:
            for pool in self._pools.values():  # one pool at a time: another System replaces the last
                pool.close()
            # only its energies (kJ/mol) are used, reduced by the caller at the state's temperature:
            # the pool's own temperature is a placeholder
            self._pools = {key: ReducedPotential(context.getSystem(), temperature=300.0, platform=key[1],
                                                 n_workers=self.n_workers)}
        return self._pools[key]

    def _proposal_energies(self, thermodynamic_state, context, proposals, right_handed):
        """Reduced potentials (n,) of the right-handed ``proposals`` (+inf for the others and for
        failed energies): in the worker pool when there is one, else in ``context``."""
        from ..physics import kT_kJ_per_mol

        u = np.full(len(proposals), math.inf)
        index = np.flatnonzero(right_handed)
        pool = self._energy_pool(thermodynamic_state, context) if len(index) > 1 else None
        if pool is not None:  # potential energies (kJ/mol) of the System, reduced at this state's temperature
            u[index] = pool.energies(proposals[index]) / kT_kJ_per_mol(thermodynamic_state.temperature.value_in_unit(unit.kelvin))
        else:
            for i in index:
                context.setPositions(proposals[i] * unit.nanometer)
                u[i] = self._reduced_potential(thermodynamic_state, context)
        return u

    def _apply_partial(self, thermodynamic_state, sampler_state, context, x, u_current):
        """Attempts one after another: each proposal depends on the state the last one left."""
        accepted = False
        for _ in range(self.n_attempts):
            k = int(self.cuts[np.random.choice(len(self.cuts), p=self.cut_probabilities)])
            if k == 0:
                proposal, log_q, ok = self.proposal.propose(1, x)
            else:
                proposal, log_q, ok = self.proposal.propose_partial(x, k)
            self.n_proposed += 1
            if not ok[0]:
                self.n_wrong_stereo += 1
                if k == 0:
                    self._record(proposal, log_q, [math.inf], ok)
                continue
            context.setPositions(proposal[0] * unit.nanometer)
            u_prop = self._reduced_potential(thermodynamic_state, context)
            if k == 0:  # whole-molecule proposals are i.i.d. from the model: recyclable
                self._record(proposal, log_q, [u_prop], ok)
            if not math.isfinite(u_prop):
                self.n_failed_energy += 1
                continue
            log_q_current = float(self.proposal.log_prob(x[None], start=k)[0])
            log_alpha = (-u_prop - float(log_q[0])) - (-u_current - log_q_current)
            if not math.isfinite(u_current) or np.log(np.random.random()) < log_alpha:
                x, u_current, accepted = proposal[0], u_prop, True
                self.n_accepted += 1
        if accepted:
            sampler_state.positions = x * unit.nanometer
        sampler_state.apply_to_context(context, ignore_velocities=True)

    def __getstate__(self):
        state = self.proposal.__getstate__()
        state.update(n_attempts=self.n_attempts)
        if self.n_workers > 1:
            state.update(n_workers=self.n_workers)
        if self.cuts is not None:  # plain lists for openmmtools' YAML storage
            state.update(cuts=list(self.cuts), cut_probabilities=list(self.cut_probabilities))
        if self.recycle:
            state.update(recycle=True)
        state.update(self.statistics)
        return state

    def __setstate__(self, state):
        self.proposal = ArBGProposal.__new__(ArBGProposal)
        self.proposal.__setstate__(state)
        self.n_attempts = int(state.get("n_attempts", 1))
        self._set_cuts(state.get("cuts"), state.get("cut_probabilities"))
        self.recycle, self._recycled = bool(state.get("recycle", False)), []
        self.n_workers, self._pools = int(state.get("n_workers", 1)), {}
        self.statistics = state

    def __str__(self):
        return (
            f"ArBGMove({os.path.basename(self.proposal.model_path)}, n_attempts={self.n_attempts}, "
            f"proposal_temperature={self.proposal.proposal_temperature}, accepted {self.n_accepted}/{self.n_proposed})"
        )
