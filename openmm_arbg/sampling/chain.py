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
import sys
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["run_chain", "run_chain_storage", "ChainResult"]


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
    seed : int
        The seed the chain ran with (drawn when none was given).
    """

    positions: np.ndarray
    observables: dict = field(default_factory=dict)
    statistics: dict = field(default_factory=dict)
    n_iterations: int = 0
    n_energy_evaluations: int = 0
    wall_time_s: float = 0.0
    seed: int = None
    recycled: dict = None

    @property
    def recycled_result(self):
        """The chain's whole-molecule proposals, accepted or not, weighed as importance sampling
        (``run_chain(recycle=True)``; :meth:`ArBGMove.recycled_result`), or None."""
        if self.recycled is None:
            return None
        from .mcmc import ArBGMove

        return ArBGMove.recycled_result(self.recycled)

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


def _seeded_langevin_move(mcmc, **kwargs):
    """openmmtools' LangevinDynamicsMove whose integrator has a fixed random-number seed
    (``move.random_seed``; openmmtools leaves it 0, a seed from the clock)."""

    class SeededLangevinDynamicsMove(mcmc.LangevinDynamicsMove):
        random_seed = 0

        def _get_integrator(self, thermodynamic_state):
            integrator = super()._get_integrator(thermodynamic_state)
            integrator.setRandomNumberSeed(int(self.random_seed))
            return integrator

    return SeededLangevinDynamicsMove(**kwargs)


def _system_sha256(system):
    import hashlib

    import openmm

    return hashlib.sha256(openmm.XmlSerializer.serialize(system).encode()).hexdigest()


def run_chain(model, thermodynamic_state, positions, n_iterations, n_attempts=10, langevin_steps=0, proposal_temperature=1.0,
              buffer_size=1024, timestep_fs=1.0, collision_rate_per_ps=1.0, platform=None, minimize=False, observables=None,
              keep_positions=True, block_size=1000, seed=None, progress=False, output=None, chunk_iterations=100,
              topology=None, out=None, cuts=None, cut_probabilities=None, recycle=False, n_workers=1):
    """Run ``n_iterations`` of [Langevin dynamics, then ``n_attempts`` ArBGMove attempts].

    The chain runs in chunks of ``chunk_iterations``. Each chunk starts from the state (positions
    and velocities) the last one left, with numpy's global generator, the Langevin integrator's
    random numbers and a fresh proposal buffer all seeded from (``seed``, chunk index): the chain
    is a function of the seed, the chunk size and the platform, whether it ran in one go or was
    interrupted and resumed (``output``). Without ``seed`` one is drawn and reported in
    ``ChainResult.seed``.

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
        OpenMM platform; default :func:`~openmm_arbg.physics.default_platform` (recorded in the
        progress file and reused on resuming).
    minimize : bool
        Minimise the starting positions first.
    observables : dict of str -> callable, optional
        Functions of positions (n, N, 3) nm returning arrays (n, ...), evaluated on every
        iteration's state (in blocks of ``block_size`` iterations).
    keep_positions : bool
        Keep every iteration's positions (memory: n_iterations x N x 3 float32).
    block_size : int
    seed : int, optional
        Seeds numpy's global generator, which openmmtools' moves and ArBGMove draw from, and the
        Langevin integrator, per chunk.
    progress : bool
        A progress bar (plain log lines when stderr is not a terminal).
    output : str, optional
        A trajectory file (any format mdtraj writes) streamed to ``output + ".progress/"`` chunk by
        chunk (:class:`~openmm_arbg.sampling.streaming.ChunkStore`) and written when the chain is
        complete. A rerun with the same arguments resumes after the last complete chunk and gives
        the same chain; SIGINT/SIGTERM stop it after the current chunk
        (:class:`~openmm_arbg.sampling.streaming.RunInterrupted`).
    chunk_iterations : int
        Iterations per chunk: the unit of reseeding and of what an interruption loses.
    topology : openmm.app.Topology or mdtraj.Topology, optional
        Of the written trajectory (default: the model's).
    out : file, optional
        Where notices about resuming go (default stdout).
    cuts, cut_probabilities : sequence, optional
        Partial resampling (:class:`~openmm_arbg.ArBGMove`): each attempt keeps the first ``k``
        model coordinates, ``k`` drawn from ``cuts`` (0: the whole molecule) with these
        probabilities (default uniform).
    recycle : bool
        Keep every whole-molecule proposal with its weight (``ChainResult.recycled_result``):
        estimates from all the energies the chain computed, not only from its states.
    n_workers : int
        Processes for the energies of each iteration's attempts (:class:`~openmm_arbg.ArBGMove`);
        the chain is the same for any value (energies equal to rounding).

    Returns
    -------
    ChainResult
    """
    import openmm
    import openmm.unit as unit
    from openmmtools import cache, mcmc, states

    from ..physics import default_platform
    from ..utils import GracefulStop, progress_bar
    from .mcmc import ArBGMove
    from .streaming import ChunkStore, RunInterrupted, chunk_seed

    n_iterations, langevin_steps, chunk_iterations = int(n_iterations), int(langevin_steps), int(chunk_iterations)
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be a positive integer; got {n_iterations}")
    if langevin_steps < 0:
        raise ValueError(f"langevin_steps must be >= 0; got {langevin_steps}")
    if chunk_iterations < 1:
        raise ValueError(f"chunk_iterations must be a positive integer; got {chunk_iterations}")
    if not unit.is_quantity(positions):
        positions = np.asarray(positions, dtype=float) * unit.nanometer
    system = thermodynamic_state.system
    store = None
    if output is not None:
        # checked before any computing: the output file, then the settings of a run to resume
        import hashlib

        start = np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float64)
        arbg_move = ArBGMove(model, n_attempts=n_attempts, proposal_temperature=proposal_temperature, buffer_size=buffer_size,
                            cuts=cuts, cut_probabilities=cut_probabilities, recycle=recycle, n_workers=n_workers)
        settings = dict(
            model_sha256=arbg_move.proposal.model_sha256,
            system_sha256=_system_sha256(system),
            temperature_K=float(thermodynamic_state.temperature.value_in_unit(unit.kelvin)),
            start_sha256=hashlib.sha256(start.tobytes()).hexdigest(),
            n_iterations=n_iterations, n_attempts=int(n_attempts), langevin_steps=langevin_steps,
            proposal_temperature=float(proposal_temperature), buffer_size=int(buffer_size), timestep_fs=float(timestep_fs),
            collision_rate_per_ps=float(collision_rate_per_ps), platform=platform, minimize=bool(minimize),
            seed=None if seed is None else int(seed), chunk_iterations=chunk_iterations,
            observables=sorted(observables or {}),
        )
        if recycle:  # only when asked: runs without it resume as before
            settings.update(recycle=True)
        if cuts is not None:  # only when given: runs without cuts resume as before
            settings.update(cuts=list(arbg_move.cuts), cut_probabilities=[float(v) for v in arbg_move.cut_probabilities])
        store = ChunkStore(output, settings, "an MCMC chain", out=out)
        seed = store.stored.get("seed_used", seed)
        platform = store.stored.get("platform_used", platform)
    else:
        arbg_move = ArBGMove(model, n_attempts=n_attempts, proposal_temperature=proposal_temperature, buffer_size=buffer_size,
                            cuts=cuts, cut_probabilities=cut_probabilities, recycle=recycle, n_workers=n_workers)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    platform = platform or default_platform(system.getNumParticles(), system, positions)
    if store is not None:
        store.update(seed_used=int(seed), platform_used=platform)
    moves = [arbg_move]
    langevin = None
    if langevin_steps:
        langevin = _seeded_langevin_move(
            mcmc, n_steps=langevin_steps, timestep=timestep_fs * unit.femtosecond, collision_rate=collision_rate_per_ps / unit.picosecond
        )
        moves.insert(0, langevin)
    move = mcmc.SequenceMove(moves)
    n_chunks = -(-n_iterations // chunk_iterations)

    observables = dict(observables or {})
    kept, values, block = [], {name: [] for name in observables}, []
    recycled = []  # per chunk: the dict of ArBGMove.pop_recycled
    keep = keep_positions or store is not None

    def flush():
        if not block:
            return
        x = np.array(block, dtype=np.float32)
        for name, fn in observables.items():
            values[name].append(np.asarray(fn(x)))
        if keep:
            kept.append(x)
        block.clear()

    if store is not None and store.complete:
        return _completed_chain(store, topology, arbg_move, observables)

    # the state to start from: the last saved chunk's, or the given one
    first_chunk, elapsed0 = 0, 0.0
    sampler_state = states.SamplerState(positions)
    if store is not None and store.n_done:
        first_chunk = store.n_done
        for c in range(first_chunk):
            saved = store.load_chunk(c)
            kept.append(saved["positions"])
            for name in observables:
                values[name].append(saved["obs_" + name])
            if recycle:
                recycled.append({k: saved["recycled_" + k] for k in _RECYCLED})
        arbg_move.statistics = {k: int(v) for k, v in zip(saved["statistics_keys"], saved["statistics_values"])}
        velocities = saved["last_velocities"] * (unit.nanometer / unit.picosecond) if saved["last_velocities"].size else None
        sampler_state = states.SamplerState(saved["last_positions"] * unit.nanometer, velocities=velocities)
        elapsed0 = float(saved["elapsed_s"])
        print(f"resuming {store.folder}: {min(first_chunk * chunk_iterations, n_iterations)} of {n_iterations} iterations done",
              file=out or sys.stdout)

    t0 = time.time()
    done = min(first_chunk * chunk_iterations, n_iterations)
    bar = progress_bar(total=n_iterations, initial=done, desc="mcmc", unit="it", disable=not progress)
    stop = GracefulStop(f"stopping after the current chunk of {chunk_iterations} iterations (Ctrl-C again to stop now)")
    with (stop if store is not None else _nothing()):
        for c in range(first_chunk, n_chunks):
            s = chunk_seed(seed, c)
            np.random.seed(s % 2**32)
            arbg_move.proposal._buffer = None  # a chunk draws its own proposals
            if langevin is not None:
                langevin.random_seed = 1 + s % (2**31 - 2)
            context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName(platform))
            sampler = mcmc.MCMCSampler(thermodynamic_state, sampler_state, move)
            if minimize and c == 0:
                sampler.minimize(context_cache=context_cache)
            n_here = min(chunk_iterations, n_iterations - c * chunk_iterations)
            chunk_start = len(kept)
            for _ in range(n_here):
                sampler.run(1, context_cache=context_cache)
                block.append(sampler.sampler_state.positions.value_in_unit(unit.nanometer))
                if len(block) >= block_size:
                    flush()
                bar.update(1)
            flush()
            if recycle:
                recycled.append(arbg_move.pop_recycled())
            sampler_state = sampler.sampler_state
            del context_cache
            if store is not None:
                stats = dict(arbg_move.statistics)
                v = sampler_state.velocities
                store.save_chunk(
                    c, n_chunks,
                    positions=np.concatenate(kept[chunk_start:]),
                    last_positions=np.asarray(sampler_state.positions.value_in_unit(unit.nanometer), dtype=np.float64),
                    last_velocities=np.zeros(0) if v is None else np.asarray(v.value_in_unit(unit.nanometer / unit.picosecond), dtype=np.float64),
                    statistics_keys=np.array(list(stats), dtype=str), statistics_values=np.array(list(stats.values()), dtype=np.int64),
                    elapsed_s=elapsed0 + time.time() - t0,
                    **{"obs_" + name: _chunk_values(values[name], n_here) for name in observables},
                    **({"recycled_" + k: recycled[-1][k] for k in _RECYCLED} if recycle else {}),
                )
                if stop.requested and c + 1 < n_chunks:
                    bar.close()
                    raise RunInterrupted(store, (c + 1) * chunk_iterations, n_iterations, stop.requested, "iterations")
    bar.close()
    positions_all = np.concatenate(kept) if kept else None
    result = ChainResult(
        positions=positions_all if keep_positions else None,
        observables={name: np.concatenate(v) for name, v in values.items()},
        statistics=dict(arbg_move.statistics),
        n_iterations=n_iterations,
        n_energy_evaluations=n_iterations * (arbg_move.n_attempts + langevin_steps),
        wall_time_s=elapsed0 + time.time() - t0,
        seed=int(seed),
        recycled={k: np.concatenate([r[k] for r in recycled]) for k in _RECYCLED} if recycle else None,
    )
    if store is not None:
        import mdtraj

        top = _mdtraj_topology(topology, arbg_move)
        store.finish(
            lambda tmp: mdtraj.Trajectory(positions_all, top).save(tmp),
            result_arrays={**{"obs_" + name: v for name, v in result.observables.items()},
                           **({"recycled_" + k: v for k, v in result.recycled.items()} if recycle else {})},
            statistics=result.statistics, n_energy_evaluations=result.n_energy_evaluations, wall_time_s=result.wall_time_s,
            summary=result.summary(),
        )
    return result


_RECYCLED = ("positions", "log_q", "reduced_potentials", "valid")


def run_chain_storage(model, thermodynamic_state, positions, n_iterations, storage, n_attempts=10, langevin_steps=0,
                      proposal_temperature=1.0, buffer_size=1024, timestep_fs=1.0, collision_rate_per_ps=1.0, platform=None,
                      checkpoint_interval=10, cuts=None, cut_probabilities=None, seed=None, n_workers=1):
    """The chain of :func:`run_chain` run by openmmtools itself: a ``MultiStateSampler`` with one
    state and one replica, stored by ``MultiStateReporter`` in the netCDF file ``storage``
    (positions every ``checkpoint_interval`` iterations, energies and the moves' statistics every
    iteration), analysable with openmmtools' tools.

    If ``storage`` exists, the run it holds is resumed from its last checkpoint (openmmtools
    restores the move, which reloads its model by path and checks its SHA-256) and run, or
    extended, to ``n_iterations`` in all; the other arguments are then those stored.

    Returns
    -------
    openmmtools.multistate.MultiStateSampler
        ``sampler.iteration`` iterations done; the ArBGMove is ``sampler.mcmc_moves[0].move_list[-1]``.
    """
    import os

    import openmm
    import openmm.unit as unit
    from openmmtools import cache, mcmc, multistate, states

    from ..physics import default_platform
    from .mcmc import ArBGMove

    import logging

    logging.getLogger("openmmtools.multistate").setLevel(logging.ERROR)  # its "API is experimental" notices
    n_iterations = int(n_iterations)
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be a positive integer; got {n_iterations}")
    if not unit.is_quantity(positions):
        positions = np.asarray(positions, dtype=float) * unit.nanometer
    platform = platform or default_platform(thermodynamic_state.system.getNumParticles(), thermodynamic_state.system, positions)
    if os.path.exists(storage):
        sampler = multistate.MultiStateSampler.from_storage(storage)
    else:
        if seed is not None:
            np.random.seed(int(seed) % 2**32)
        moves = [ArBGMove(model, n_attempts=n_attempts, proposal_temperature=proposal_temperature, buffer_size=buffer_size,
                          cuts=cuts, cut_probabilities=cut_probabilities, n_workers=n_workers)]
        if langevin_steps:
            moves.insert(0, mcmc.LangevinDynamicsMove(n_steps=int(langevin_steps), timestep=timestep_fs * unit.femtosecond,
                                                      collision_rate=collision_rate_per_ps / unit.picosecond))
        sampler = multistate.MultiStateSampler(mcmc_moves=mcmc.SequenceMove(moves), number_of_iterations=n_iterations,
                                               online_analysis_interval=None)
        reporter = multistate.MultiStateReporter(storage, checkpoint_interval=int(checkpoint_interval))
        sampler.create([thermodynamic_state], states.SamplerState(positions), reporter)
    sampler.energy_context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName(platform))
    sampler.sampler_context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName(platform))
    remaining = n_iterations - sampler.iteration
    if remaining > 0:
        sampler.extend(remaining)
    return sampler


def _chunk_values(parts, n):
    """The last ``n`` rows of a list of observable blocks."""
    return np.concatenate(parts)[-n:]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _mdtraj_topology(topology, arbg_move):
    import mdtraj

    if topology is None:
        topology = arbg_move.proposal.model.topology
    return topology if isinstance(topology, mdtraj.Topology) else mdtraj.Topology.from_openmm(topology)


def _completed_chain(store, topology, arbg_move, observables):
    """The ChainResult of a complete chain, read back from its files."""
    from ..utils import load_trajectory

    s = store.stored
    traj = load_trajectory(store.output, top=_mdtraj_topology(topology, arbg_move))
    saved = store.load_result()
    print(f"{store.output} is already complete with these settings (delete it and {store.folder} to run again)",
          file=store.out)
    return ChainResult(
        positions=traj.xyz,
        observables={name: saved["obs_" + name] for name in observables if "obs_" + name in saved},
        statistics=dict(s.get("statistics", {})),
        n_iterations=s["n_iterations"],
        n_energy_evaluations=s.get("n_energy_evaluations", 0),
        wall_time_s=s.get("wall_time_s", 0.0),
        seed=s.get("seed_used"),
        recycled={k: saved["recycled_" + k] for k in _RECYCLED} if "recycled_valid" in saved else None,
    )
