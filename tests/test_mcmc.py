"""ArBGMove is exact: with an untrained model as the proposal, independence Metropolis-Hastings
reproduces the analytic marginals of a chain molecule; importance sampling its averages and log Z.

Tolerances are 4.5 standard errors of each estimator (statistical inefficiency from pymbar for
the chains, bootstrap or delta method for importance sampling), with fixed seeds.
"""

import copy
import math

import mdtraj
import numpy as np
import openmm
import openmm.unit as unit
import pytest
from openmmtools import cache, mcmc, states
from pymbar import timeseries

from openmm_arbg import ArBG
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.sampling.importance import importance_sample
from openmm_arbg.simulation.md import run_md
from openmm_arbg.sampling.mcmc import ArBGMove
from openmm_arbg.simulation.testsystems import harmonic_chain

from conftest import TINY_NETWORK

N_SIGMA = 4.5


def reference_cache():
    return cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))


def apply_repeatedly(move, thermo, positions, n_applies, context_cache=None):
    """Apply ``move`` ``n_applies`` times from ``positions``; the state after each apply (n, N, 3) nm."""
    sampler_state = states.SamplerState(positions)
    context_cache = context_cache or reference_cache()
    xs = []
    for _ in range(n_applies):
        move.apply(thermo, sampler_state, context_cache)
        xs.append(sampler_state.positions.value_in_unit(unit.nanometer))
    return np.array(xs)


def mean_and_error(series):
    series = np.asarray(series, dtype=float)
    g = timeseries.statistical_inefficiency(series) if series.std() > 0 else 1.0
    return series.mean(), series.std(ddof=1) * math.sqrt(g / len(series))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    ms, analytic = harmonic_chain(4)
    out = tmp_path_factory.mktemp("chain_md")
    frames = run_md(ms, str(out), n_steps=100_000, report_interval=50, equilibration_steps=1000, progress=False, seed=1)
    return ms, analytic, frames.xyz.astype(float)


@pytest.fixture(scope="module", params=["internal", "cartesian"])
def untrained(request, chain, tmp_path_factory):
    ms, _, frames = chain
    model = ArBG.from_data(ms.topology, frames, representation=request.param, n_bins=32, network=TINY_NETWORK, seed=2)
    path = tmp_path_factory.mktemp("models") / f"chain_{request.param}.safetensors"
    model.save(path)
    return ArBG.load(path)


def observables(ms, positions):
    traj = mdtraj.Trajectory(np.asarray(positions, dtype=np.float32), mdtraj.Topology.from_openmm(ms.topology))
    phi = mdtraj.compute_dihedrals(traj, [[0, 1, 2, 3]])[:, 0].astype(float)
    r = mdtraj.compute_distances(traj, [[0, 1]])[:, 0].astype(float)
    theta = mdtraj.compute_angles(traj, [[0, 1, 2]])[:, 0].astype(float)
    return {
        ("torsion", "cos(3 phi)"): (np.cos(3 * phi), lambda p: np.cos(3 * p)),
        ("torsion", "phi in [0, 2)"): (((phi >= 0) & (phi < 2.0)).astype(float), None),
        ("bond", "r"): (r, lambda x: x),
        ("bond", "r^2"): (r**2, lambda x: x**2),
        ("angle", "theta"): (theta, lambda x: x),
        ("angle", "cos theta"): (np.cos(theta), np.cos),
    }


def exact_value(analytic, kind, name, f):
    if f is None:  # an indicator
        return analytic.probability(kind, 0.0, 2.0)
    return analytic.expectation(kind, f)


def test_arbg_move_alone_reproduces_analytic_marginals(chain, untrained):
    ms, analytic, _ = chain
    np.random.seed(7)
    move = ArBGMove(untrained, n_attempts=250, buffer_size=2000)
    thermo = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
    xs = apply_repeatedly(move, thermo, ms.positions, 240)  # 60 000 attempts
    assert move.n_proposed == 60_000
    assert move.n_accepted > 300, move.statistics
    for (kind, name), (series, f) in observables(ms, xs).items():
        est, err = mean_and_error(series)
        exact = exact_value(analytic, kind, name, f)
        assert abs(est - exact) < N_SIGMA * err, (untrained.representation.kind, name, est, exact, err)


def test_importance_sampling_reproduces_averages_and_log_z(chain, untrained):
    ms, analytic, _ = chain
    with ReducedPotential(ms.system, temperature=300.0) as u:
        result = importance_sample(untrained, u, 20_000, seed=11)
    assert result.ess > 50
    log_z, log_z_err = result.log_partition_function()
    exact = analytic.log_partition_function(300.0)
    assert abs(log_z - exact) < N_SIGMA * log_z_err, (log_z, exact, log_z_err)
    for (kind, name), (values, f) in observables(ms, result.positions).items():
        est, err = result.expectation(values, n_bootstrap=300, rng=3)
        exact_v = exact_value(analytic, kind, name, f)
        assert abs(est - exact_v) < N_SIGMA * err, (name, est, exact_v, err)


def test_mixed_with_langevin_in_mcmc_sampler(chain, untrained):
    """ArBGMove inside SequenceMove with LangevinDynamicsMove, in an MCMCSampler, at 400 K."""
    ms, analytic, _ = chain
    np.random.seed(3)
    arbg_move = ArBGMove(untrained, n_attempts=50, buffer_size=1000)
    move = mcmc.SequenceMove([mcmc.LangevinDynamicsMove(n_steps=50, timestep=1.0 * unit.femtosecond), arbg_move])
    thermo = states.ThermodynamicState(ms.system, 400 * unit.kelvin)
    sampler = mcmc.MCMCSampler(thermo, states.SamplerState(ms.positions), move)
    xs = []
    context_cache = reference_cache()
    for _ in range(300):
        sampler.run(1, context_cache=context_cache)
        xs.append(sampler.sampler_state.positions.value_in_unit(unit.nanometer))
        assert sampler.sampler_state.velocities is not None
    assert arbg_move.n_accepted > 0
    series = observables(ms, np.array(xs))[("bond", "r")][0]
    est, err = mean_and_error(series)
    assert abs(est - analytic.expectation("bond", lambda x: x, temperature_K=400.0)) < N_SIGMA * err


def test_nan_energies_are_never_accepted(chain, untrained):
    """A force that is NaN for a short first bond: such proposals must all be rejected."""
    ms, _, _ = chain
    system = copy.deepcopy(ms.system)
    force = openmm.CustomBondForce("0.001 * log(r - 0.17)")  # NaN for r < 0.17 nm
    force.addBond(0, 1, [])
    system.addForce(force)
    positions = ms.positions_nm().copy()
    positions[1] = positions[0] + (positions[1] - positions[0]) * 0.2 / 0.15  # start with r01 = 0.2 nm
    np.random.seed(5)
    move = ArBGMove(untrained, n_attempts=200, buffer_size=1000)
    thermo = states.ThermodynamicState(system, 300 * unit.kelvin)
    sampler_state = states.SamplerState(positions * unit.nanometer)
    context_cache = reference_cache()
    for _ in range(20):
        move.apply(thermo, sampler_state, context_cache)
        x = sampler_state.positions.value_in_unit(unit.nanometer)
        assert np.linalg.norm(x[1] - x[0]) >= 0.17
    assert move.n_failed_energy > 0


def test_refuses_constrained_periodic_and_restrained_systems(chain, untrained):
    ms, _, _ = chain
    thermo_of = lambda s: states.ThermodynamicState(s, 300 * unit.kelvin)  # noqa: E731
    constrained = copy.deepcopy(ms.system)
    constrained.addConstraint(0, 1, 0.15)
    move = ArBGMove(untrained)
    with pytest.raises(ValueError, match="holonomic constraints"):
        move.apply(thermo_of(constrained), states.SamplerState(ms.positions), reference_cache())
    restrained = copy.deepcopy(ms.system)
    f = openmm.CustomExternalForce("x^2")
    f.addParticle(0, [])
    restrained.addForce(f)
    with pytest.raises(ValueError, match="CustomExternalForce"):
        move.apply(thermo_of(restrained), states.SamplerState(ms.positions), reference_cache())
    periodic = copy.deepcopy(ms.system)
    nb = openmm.NonbondedForce()
    for _ in range(4):
        nb.addParticle(0.0, 0.3, 0.0)
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    periodic.addForce(nb)
    periodic.setDefaultPeriodicBoxVectors(openmm.Vec3(3, 0, 0), openmm.Vec3(0, 3, 0), openmm.Vec3(0, 0, 3))
    with pytest.raises(ValueError, match="periodic"):
        move.apply(thermo_of(periodic), states.SamplerState(ms.positions, box_vectors=periodic.getDefaultPeriodicBoxVectors()), reference_cache())


def test_wrong_handed_proposals_are_rejected(alanine, tmp_path):
    """Alanine dipeptide with an untrained model over the Z-matrix without built-in handedness
    (every torsion periodic, as the 0.1 models): most proposals invert CA; none may be accepted.
    (Models built by from_data carry the handedness in their coordinates and never invert it.)"""
    import torch

    from conftest import jittered
    from openmm_arbg.model.discretizer import Discretizer
    from openmm_arbg.molecule.representation import build_representation

    frames = jittered(alanine.positions_nm(), 100, 0.003)
    model = ArBG.from_data(alanine.topology, frames, n_bins=16, network=TINY_NETWORK)
    legacy = build_representation("internal", model.graph)
    z, _ = legacy.to_model_coordinates(torch.as_tensor(frames))
    bins = Discretizer.fit(z.numpy(), legacy.coordinate_kinds, 16)
    model = ArBG(model.graph, legacy.to_dict(), bins, model.stereo, model.network, legacy.anchors)
    model.save(tmp_path / "ala.safetensors")
    np.random.seed(0)
    move = ArBGMove(str(tmp_path / "ala.safetensors"), n_attempts=100, buffer_size=100)
    thermo = states.ThermodynamicState(alanine.system, 300 * unit.kelvin)
    sampler_state = states.SamplerState(alanine.positions)
    context_cache = reference_cache()
    for _ in range(3):
        move.apply(thermo, sampler_state, context_cache)
        assert model.check_stereo(sampler_state.positions.value_in_unit(unit.nanometer)).all()
    assert move.n_wrong_stereo > 0


def test_move_needs_a_saved_model(chain):
    ms, _, frames = chain
    model = ArBG.from_data(ms.topology, frames, network=TINY_NETWORK)
    with pytest.raises(ValueError, match="saved to a file"):
        ArBGMove(model)


def test_deepcopy_and_serialization(untrained, chain, tmp_path):
    from openmmtools.utils import deserialize, serialize

    move = ArBGMove(untrained, n_attempts=3, proposal_temperature=1.2)
    move.statistics = dict(n_accepted=4, n_proposed=9)
    clone = copy.deepcopy(move)
    assert clone.statistics == move.statistics and clone.model is move.model
    assert clone.proposal._buffer is None  # proposals are never shared between copies
    data = serialize(move)
    original = copy.deepcopy(data)  # deserialize consumes its input
    assert all(isinstance(v, (str, int, float)) for k, v in data.items() if k != "__class_name__" and k != "__module_name__")
    back = deserialize(copy.deepcopy(original))
    assert isinstance(back, ArBGMove) and back.n_attempts == 3 and back.proposal.proposal_temperature == 1.2
    assert back.statistics["n_accepted"] == 4
    # tolerant of missing keys
    minimal = ArBGMove.__new__(ArBGMove)
    minimal.__setstate__({"model_path": move.proposal.model_path})
    assert minimal.n_attempts == 1 and minimal.n_proposed == 0
    # a changed model file is refused
    other = tmp_path / "other.safetensors"
    ms, _, frames = chain
    ArBG.from_data(ms.topology, frames, network=TINY_NETWORK, seed=9).save(other)
    state = copy.deepcopy(original)
    state["model_path"] = str(other)
    with pytest.raises(ValueError, match="has changed"):
        deserialize(state)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["internal", "cartesian"])
def test_five_atom_chain_long_run(kind, tmp_path):
    """Slow: a 5-atom chain (two torsions), 250 000 attempts, tighter statistics."""
    ms, analytic = harmonic_chain(5)
    frames = run_md(ms, str(tmp_path / "md"), n_steps=200_000, report_interval=50, equilibration_steps=1000, progress=False, seed=3)
    path = tmp_path / "m.safetensors"
    ArBG.from_data(ms.topology, frames.xyz, representation=kind, n_bins=32, network=TINY_NETWORK, seed=2).save(path)
    np.random.seed(11)
    move = ArBGMove(str(path), n_attempts=500, buffer_size=5000)
    thermo = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
    xs = apply_repeatedly(move, thermo, ms.positions, 500)
    traj = mdtraj.Trajectory(xs.astype(np.float32), mdtraj.Topology.from_openmm(ms.topology))
    phis = mdtraj.compute_dihedrals(traj, [[0, 1, 2, 3], [1, 2, 3, 4]]).astype(float)
    exact = analytic.expectation("torsion", lambda p: np.cos(3 * p))
    for j in range(2):
        est, err = mean_and_error(np.cos(3 * phis[:, j]))
        assert abs(est - exact) < N_SIGMA * err, (kind, j, est, exact, err)


def test_energies_in_worker_processes_give_the_same_chain(chain, untrained):
    """ArBGMove(n_workers=2) computes the attempts' energies in a worker pool on the Context's
    platform: the same energies, so the same seed gives the same chain as one Context."""
    ms, _, _ = chain
    thermo = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
    runs = []
    for n_workers in (1, 2):
        np.random.seed(5)
        move = ArBGMove(untrained, n_attempts=25, buffer_size=100, n_workers=n_workers, recycle=True)
        xs = apply_repeatedly(move, thermo, ms.positions, 8)
        assert (len(move._pools) == 1) == (n_workers == 2)
        runs.append((xs, move.statistics, move.pop_recycled()["reduced_potentials"]))
        copied = copy.deepcopy(move)
        assert copied.n_workers == n_workers and copied._pools == {}
    (x1, stats1, u1), (x2, stats2, u2) = runs
    assert stats1 == stats2 and stats1["n_accepted"] > 0
    np.testing.assert_allclose(u1, u2, rtol=1e-12)  # beta * U in another order: equal to rounding
    np.testing.assert_array_equal(x1, x2)


def test_energy_pool_is_shared_across_temperatures(chain, untrained):
    """Replicas that swap temperatures reuse one worker pool; energies are reduced at each
    state's own temperature (the same as the Context's reduced potential)."""
    ms, _, _ = chain
    np.random.seed(9)
    move = ArBGMove(untrained, n_attempts=10, buffer_size=100, n_workers=2, recycle=True)
    context_cache = reference_cache()
    for T in (300.0, 450.0, 300.0, 450.0):
        thermo = states.ThermodynamicState(ms.system, T * unit.kelvin)
        move.apply(thermo, states.SamplerState(ms.positions), context_cache)
        rec = move.pop_recycled()
        context, _ = context_cache.get_context(thermo)
        ok = np.isfinite(rec["reduced_potentials"])
        assert ok.sum() > 1
        expected = []
        for x in rec["positions"][ok].astype(np.float64):  # the Context's reduced potential at this temperature
            context.setPositions(x * unit.nanometer)
            expected.append(thermo.reduced_potential(context))
        np.testing.assert_allclose(rec["reduced_potentials"][ok], expected, rtol=1e-6, atol=1e-3)  # kept positions are float32
    assert len(move._pools) == 1

