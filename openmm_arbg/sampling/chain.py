"""Run a Markov chain of ArBG moves (and optionally Langevin dynamics) in an openmmtools
``MCMCSampler``, observing it after every iteration.

:func:`run_chain` is what ``arbg mcmc``, the demo, the examples and the benchmarks run. It is the
plain openmmtools recipe,

>>> move = SequenceMove([LangevinDynamicsMove(n_steps=25), ArBGMove("model.safetensors", n_attempts=25)])  # doctest: +SKIP
>>> sampler = MCMCSampler(thermodynamic_state, SamplerState(positions), move)  # doctest: +SKIP
>>> for _ in range(n_iterations): sampler.run(1, context_cache=context_cache)  # doctest: +SKIP

plus the bookkeeping: positions or observables after every iteration, the move's counters, the
number of energy evaluations (one per ArBG attempt and one per Langevin step) and the wall time.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["run_chain", "ChainResult"]


@dataclass
class ChainResult:
    """What a chain of :func:`run_chain` did.

    Attributes
    ----------
    positions : numpy.ndarray (n_iterations, N, 3) float32, nm, or None
        The state after every iteration (None with ``keep_positions=False``).
    observables : dict of str -> numpy.ndarray (n_iterations, ...)
        The observables after every iteration.
    statistics : dict
        The ArBGMove's counters: ``n_accepted``, ``n_proposed``, ``n_wrong_stereo``, ``n_failed_energy``.
    n_iterations, n_energy_evaluations : int
    wall_time_s : float
    """

    positions: np.ndarray
    observables: dict = field(default_factory=dict)
    statistics: dict = field(default_factory=dict)
    n_iterations: int = 0
    n_energy_evaluations: int = 0
    wall_time_s: float = 0.0

    @property
    def acceptance_rate(self):
        n = self.statistics.get("n_proposed", 0)
        return self.statistics.get("n_accepted", 0) / n if n else math.nan

    @property
    def wrong_handed_fraction(self):
        n = self.statistics.get("n_proposed", 0)
        return self.statistics.get("n_wrong_stereo", 0) / n if n else math.nan

    def summary(self):
        """One line: iterations, energy evaluations, acceptance and rejection counts, wall time."""
        st = self.statistics
        return (
            f"{self.n_iterations} iterations, {self.n_energy_evaluations:,} energy evaluations; ArBGMove acceptance "
            f"{100 * self.acceptance_rate:.1f}% of {st.get('n_proposed', 0)} (wrong-handed {st.get('n_wrong_stereo', 0)}, "
            f"failed energies {st.get('n_failed_energy', 0)}); {self.wall_time_s:.0f} s"
        )


def run_chain(model, thermodynamic_state, positions, n_iterations, n_attempts=10, langevin_steps=0, proposal_temperature=1.0,
              buffer_size=256, timestep_fs=1.0, collision_rate_per_ps=1.0, platform=None, minimize=False, observables=None,
              keep_positions=True, block_size=1000, seed=None, progress=False):
    """Run ``n_iterations`` of [Langevin dynamics, then ``n_attempts`` ArBGMove attempts].

    Parameters
    ----------
    model : ArBG or str
        A model saved to a file (``ArBG.load``) or the path of one (see :class:`~openmm_arbg.ArBGMove`).
    thermodynamic_state : openmmtools.states.ThermodynamicState
        The target (its System must suit whole-molecule moves: no constraints, no box).
    positions : openmm.unit.Quantity or array_like (N, 3) nm
        Starting positions.
    n_iterations : int
    n_attempts : int
        ArBG Metropolis-Hastings attempts per iteration.
    langevin_steps : int
        Langevin steps per iteration before the ArBG attempts (0: ArBG moves only).
    proposal_temperature : float
        Softmax temperature of the proposal (exact at any value).
    buffer_size : int
        Proposals drawn per network call.
    timestep_fs, collision_rate_per_ps : float
        Of the Langevin move.
    platform : str, optional
        OpenMM platform; default :func:`~openmm_arbg.physics.default_platform`.
    minimize : bool
        Minimise the starting positions first.
    observables : dict of str -> callable, optional
        Functions of positions (n, N, 3) nm returning arrays (n, ...), evaluated on every
        iteration's state (in blocks of ``block_size`` iterations).
    keep_positions : bool
        Keep every iteration's positions (memory: n_iterations x N x 3 float32).
    block_size : int
    seed : int, optional
        Seeds numpy's global generator, which openmmtools' moves and ArBGMove draw from.
    progress : bool
        A tqdm progress bar.

    Returns
    -------
    ChainResult
    """
    import openmm
    import openmm.unit as unit
    from openmmtools import cache, mcmc, states
    from tqdm.auto import tqdm

    from ..physics import default_platform
    from .mcmc import ArBGMove

    n_iterations, langevin_steps = int(n_iterations), int(langevin_steps)
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be a positive integer; got {n_iterations}")
    if langevin_steps < 0:
        raise ValueError(f"langevin_steps must be >= 0; got {langevin_steps}")
    if seed is not None:
        np.random.seed(seed)
    arbg_move = ArBGMove(model, n_attempts=n_attempts, proposal_temperature=proposal_temperature, buffer_size=buffer_size)
    moves = [arbg_move]
    if langevin_steps:
        langevin = mcmc.LangevinDynamicsMove(
            n_steps=langevin_steps, timestep=timestep_fs * unit.femtosecond, collision_rate=collision_rate_per_ps / unit.picosecond
        )
        moves.insert(0, langevin)
    if not unit.is_quantity(positions):
        positions = np.asarray(positions, dtype=float) * unit.nanometer
    system = thermodynamic_state.system
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName(platform or default_platform(system.getNumParticles(), system, positions)))
    sampler = mcmc.MCMCSampler(thermodynamic_state, states.SamplerState(positions), mcmc.SequenceMove(moves))
    if minimize:
        sampler.minimize(context_cache=context_cache)

    observables = dict(observables or {})
    kept, values, block = [], {name: [] for name in observables}, []

    def flush():
        x = np.array(block, dtype=np.float32)
        for name, fn in observables.items():
            values[name].append(np.asarray(fn(x)))
        if keep_positions:
            kept.append(x)
        block.clear()

    t0 = time.time()
    for _ in tqdm(range(n_iterations), desc="mcmc", unit="it", disable=not progress):
        sampler.run(1, context_cache=context_cache)
        block.append(sampler.sampler_state.positions.value_in_unit(unit.nanometer))
        if len(block) >= block_size:
            flush()
    if block:
        flush()
    return ChainResult(
        positions=np.concatenate(kept) if keep_positions else None,
        observables={name: np.concatenate(v) for name, v in values.items()},
        statistics=dict(arbg_move.statistics),
        n_iterations=n_iterations,
        n_energy_evaluations=n_iterations * (arbg_move.n_attempts + langevin_steps),
        wall_time_s=time.time() - t0,
    )
