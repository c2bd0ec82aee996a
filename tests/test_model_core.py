"""The model core: prefix factorisation, prefix sampling, hand-driven generation and particle
selection, suffix-resampling MH alone, one network shared by two molecules, dropout, and the
System guard of ArBGMove.

(a) ``log q(z) = log q(z_<k) + log q(z_>=k | z_<k)`` for every cut ``k`` (``ArBG.log_prob``,
    ``log_prob_prefix``, ``log_prob(start=k)``); ``sample(prefix=...)`` keeps the prefix and
    reports ``log_prob(x', start=k)``; ``start``/``step`` by hand equal ``sample``;
    ``GenerationState.select`` keeps each particle's ``log q`` its own.
(b) MH that only ever redraws the coordinates after a fixed cut reproduces the chain's exact
    laws of those coordinates (4.5 standard errors with pymbar's statistical inefficiency).
(c) One network object shared by alanine dipeptide and the chain (rotary and learned positions).
(d) A network with dropout, left in training mode: densities are still exact and deterministic;
    the Trainer leaves the model in evaluation mode.
(e) ArBGMove refuses, on every apply, Systems for which it is not exact.
"""

import copy
import math

import numpy as np
import openmm
import openmm.unit as unit
import pytest
import torch
from openmmtools import cache, states
from pymbar import timeseries

from openmm_arbg import ArBG
from openmm_arbg.sampling.mcmc import ArBGMove
from openmm_arbg.simulation.testsystems import harmonic_chain

from conftest import TINY_NETWORK, chain_geometry, exact_chain_states, jittered

N_SIGMA = 4.5


def reference_cache():
    return cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))


@pytest.fixture(scope="module")
def chain4():
    ms, analytic = harmonic_chain(4)
    return ms, analytic, exact_chain_states(analytic, 400, seed=31)


@pytest.fixture(scope="module")
def alanine_frames(alanine):
    return jittered(alanine.positions_nm(), 200, 0.005, seed=4)


@pytest.fixture(scope="module", params=["chain-internal", "chain-cartesian", "alanine-internal", "alanine-cartesian"])
def molecule_model(request, chain4, alanine, alanine_frames):
    molecule, representation = request.param.split("-")
    if molecule == "chain":
        topology, frames = chain4[0].topology, chain4[2]
    else:
        topology, frames = alanine.topology, alanine_frames
    model = ArBG.from_data(topology, frames, representation=representation, n_bins=32, network=TINY_NETWORK, seed=3)
    return model, frames[:16]


def _angle_diff(a, b):
    return np.abs(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b)))))


# ---------------------------------------------------------------------------- (a) prefixes


def test_log_prob_factorises_at_every_cut(molecule_model):
    model, x = molecule_model
    full = model.log_prob(x)
    assert np.isfinite(full).all()
    D = model.n_coords
    for k in range(D + 1):
        prefix = model.log_prob_prefix(x, k)
        suffix = model.log_prob(x, start=k)
        np.testing.assert_allclose(prefix + suffix, full, rtol=0, atol=1e-8, err_msg=f"cut {k} of {D}")
    assert np.all(model.log_prob_prefix(x, 0) == 0)


def test_sampling_a_prefix_keeps_it_and_reports_the_conditional_density(molecule_model):
    model, x = molecule_model
    z, _ = model.to_model_coordinates(x[:8])
    z = z.numpy()
    D = model.n_coords
    periodic = np.array([k == "periodic" for k in model.discretizer.kinds])
    for k in sorted({0, 1, 2, 3, D // 2, D - 1, D}):
        # at the density level the prefix is copied (periodic columns wrapped, which moves a torsion
        # already in [-pi, pi) by at most an ulp)
        prefix = torch.as_tensor(z[:, :k])
        zz, _ = model.density.sample(8, generator=torch.Generator().manual_seed(k), prefix=prefix)
        assert torch.equal(zz[:, :k], model.discretizer.wrap(prefix, slice(0, k))), k
        assert (zz[:, :k] - prefix).abs().max() <= 1e-14 if k else True
        # through positions: the same shape up to round-off, and log q = log_prob(x', start=k)
        x_new, log_q = model.sample(8, seed=100 + k, prefix=z[:, :k])
        z_new, _ = model.to_model_coordinates(x_new)
        z_new = z_new.numpy()
        diff = np.where(periodic[:k], _angle_diff(z_new[:, :k], z[:, :k]), np.abs(z_new[:, :k] - z[:, :k]))
        assert diff.size == 0 or diff.max() < 1e-9, (k, diff.max())
        np.testing.assert_allclose(log_q, model.log_prob(x_new, start=k), rtol=0, atol=1e-6, err_msg=f"cut {k}")
        if k < D:  # something was redrawn
            assert np.abs(z_new[:, k:] - z[:, k:]).max() > 0
    # one prefix for all rows
    x_one, log_q_one = model.sample(5, seed=7, prefix=z[0, :3])
    np.testing.assert_allclose(log_q_one, model.log_prob(x_one, start=3), rtol=0, atol=1e-6)


def test_hand_driven_generation_equals_sample(molecule_model):
    model, x = molecule_model
    density = model.density
    z, _ = model.to_model_coordinates(x[:6])
    for prefix in (None, z[:, :4]):
        for kv_cache in (True, False):
            state = density.start(6, prefix=prefix, proposal_temperature=1.3, kv_cache=kv_cache)
            generator = torch.Generator().manual_seed(5)
            increments = torch.zeros(6, dtype=torch.float64)
            while state.position < density.n_coords:
                j = state.position
                zj, log_qj = density.step(state, generator)
                assert torch.equal(state.z[:, j], zj)
                increments += log_qj
            # the same computation as sample with the same generator: identical draws and log q
            z_ref, log_q_ref = density.sample(6, 1.3, torch.Generator().manual_seed(5), kv_cache=kv_cache, prefix=prefix)
            assert torch.equal(state.z, z_ref) and torch.equal(state.log_q, log_q_ref)
            torch.testing.assert_close(increments, state.log_q, rtol=0, atol=1e-12)
            # with and without the KV cache, and in one forward pass (log_prob), the float32 network
            # gives logits equal to round-off: log q to 1e-6
            z_other, log_q_other = density.sample(6, 1.3, torch.Generator().manual_seed(5), kv_cache=not kv_cache, prefix=prefix)
            torch.testing.assert_close(z_other, state.z, rtol=0, atol=1e-12)
            torch.testing.assert_close(log_q_other, state.log_q, rtol=0, atol=1e-6)
            start = 0 if prefix is None else prefix.shape[1]
            torch.testing.assert_close(density.log_prob(state.z, 1.3, start=start), state.log_q, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kv_cache", [True, False])
def test_select_keeps_each_particles_log_q(molecule_model, kv_cache):
    """Resampling particles in the middle of generation (with duplicates, dropping some): each
    finished particle's log q is still log_prob of its own coordinates (to 1e-6: generation and
    log_prob run the float32 network differently, KV cache against one pass)."""
    model, x = molecule_model
    density = model.density
    D = density.n_coords
    filler, _ = model.to_model_coordinates(x[:1])  # valid values for the columns not generated yet

    def prefix_log_prob(z, stop):
        z = z.clone()
        z[:, stop:] = filler[:, stop:]
        return density.log_prob(z, stop=stop)

    generator = torch.Generator().manual_seed(11)
    state = density.start(8, kv_cache=kv_cache)
    rng = np.random.default_rng(0)
    for stop in sorted({1, D // 3, 2 * D // 3}):
        while state.position < stop:
            density.step(state, generator)
        index = rng.choice(len(state), size=len(state) + 2, replace=True)  # grow the population too
        before_z, before_q = state.z[index, :stop].clone(), state.log_q[index].clone()
        state.select(index)
        assert torch.equal(state.z[:, :stop], before_z) and torch.equal(state.log_q, before_q)
        torch.testing.assert_close(state.log_q, prefix_log_prob(state.z, stop), rtol=0, atol=1e-6)
    while state.position < D:
        density.step(state, generator)
    torch.testing.assert_close(state.log_q, density.log_prob(state.z), rtol=0, atol=1e-6)
    # duplicated particles diverged after the selection
    assert len(torch.unique(state.z[:, -1])) > len(state) // 2


# ---------------------------------------------------------------------------- (b) suffix resampling alone


def _mean_and_error(series):
    series = np.asarray(series, dtype=float)
    g = timeseries.statistical_inefficiency(series) if series.std() > 0 else 1.0
    return series.mean(), series.std(ddof=1) * math.sqrt(g / len(series))


def test_suffix_resampling_alone_reproduces_the_exact_laws(chain4_trained):
    """Internal coordinates of the 4-atom chain: the last atom's (r, theta, phi) are coordinates
    3, 4, 5. An ArBGMove with ``cuts=[3]`` only ever redraws those; they must follow the chain's
    exact one-dimensional laws (which do not depend on the fixed coordinates), within 4.5
    standard errors (statistical inefficiency from pymbar)."""
    ms, analytic, paths = chain4_trained
    model = ArBG.load(paths["internal"])
    move = ArBGMove(str(paths["internal"]), n_attempts=1, cuts=[3])
    thermo = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
    sampler_state = states.SamplerState(ms.positions)
    context_cache = reference_cache()
    np.random.seed(17)
    xs = []
    for _ in range(700):
        move.apply(thermo, sampler_state, context_cache)
        xs.append(sampler_state.positions.value_in_unit(unit.nanometer))
    xs = np.array(xs)
    z0, _ = model.to_model_coordinates(ms.positions_nm())
    z, _ = model.to_model_coordinates(xs)
    np.testing.assert_allclose(z[:, :3].numpy(), np.broadcast_to(z0[:, :3].numpy(), (len(xs), 3)), rtol=0, atol=1e-9)
    assert move.acceptance_rate > 0.3, move.statistics
    r, theta, phi = chain_geometry(ms.topology, xs)  # the last atom: bond 2-3, angle 1-2-3, torsion 0-1-2-3
    checks = [
        ("phi in [0, 2)", ((phi[:, -1] >= 0) & (phi[:, -1] < 2.0)).astype(float), analytic.probability("torsion", 0.0, 2.0)),
        ("cos 3phi", np.cos(3 * phi[:, -1]), analytic.expectation("torsion", lambda p: np.cos(3 * p))),
        ("phi > 0", (phi[:, -1] > 0).astype(float), analytic.probability("torsion", 0.0, math.pi)),
        ("r", r[:, -1], analytic.expectation("bond", lambda v: v)),
        ("cos theta", np.cos(theta[:, -1]), analytic.expectation("angle", np.cos)),
    ]
    for name, series, exact in checks:
        est, err = _mean_and_error(series)
        assert abs(est - exact) < N_SIGMA * err, (name, est, exact, err)


# ---------------------------------------------------------------------------- (c) shared network


@pytest.mark.parametrize("position_encoding", ["rope", "learned"])
def test_one_network_shared_by_two_molecules(position_encoding, alanine, alanine_frames, chain4):
    ms, _, chain_frames = chain4
    net = dict(TINY_NETWORK, position_encoding=position_encoding)
    a = ArBG.from_data(alanine.topology, alanine_frames, n_bins=32, network=net, seed=1)
    b = ArBG.from_data(ms.topology, chain_frames, n_bins=32, network=a.network)
    assert a.network is b.network
    if position_encoding == "learned":
        assert a.network.cfg.max_positions == a.n_coords  # the table was sized by the first molecule
        with pytest.raises(ValueError, match="position table"):  # the other way round does not fit
            small = ArBG.from_data(ms.topology, chain_frames, n_bins=32, network=net)
            ArBG.from_data(alanine.topology, alanine_frames, n_bins=32, network=small.network)
    xa, xb = alanine_frames[:6], chain_frames[:6]
    lp_a, lp_b = a.log_prob(xa), b.log_prob(xb)
    for model, x in ((a, xa), (b, xb)):
        samples, log_q = model.sample(32, seed=3)
        assert samples.shape == (32, model.n_atoms, 3)
        np.testing.assert_allclose(model.log_prob(samples), log_q, rtol=0, atol=1e-6)
    # using one molecule's density changes nothing in the other's
    np.testing.assert_array_equal(a.log_prob(xa), lp_a)
    np.testing.assert_array_equal(b.log_prob(xb), lp_b)
    # the density of each molecule is that of the shared network: another network gives another density
    other = ArBG.from_data(ms.topology, chain_frames, n_bins=32, network=net, seed=9)
    assert np.abs(other.log_prob(xb) - lp_b).max() > 1e-3
    # ... and a molecule's own features and bins: the same network read by a model of the chain built
    # again gives the same density
    b2 = ArBG.from_data(ms.topology, chain_frames, n_bins=32, network=a.network)
    np.testing.assert_array_equal(b2.log_prob(xb), lp_b)


# ---------------------------------------------------------------------------- (d) dropout


def test_dropout_does_not_touch_densities(chain4, tmp_path):
    ms, _, frames = chain4
    model = ArBG.from_data(ms.topology, frames, n_bins=32, network=dict(TINY_NETWORK, dropout=0.1), seed=2)
    with torch.no_grad():  # sharper conditionals, so that dropout would show
        model.network.head.weight.mul_(20.0)
    model.train()
    x = frames[:32]
    first, second = model.log_prob(x), model.log_prob(x)
    np.testing.assert_array_equal(first, second)
    assert model.network.training, "log_prob must restore the mode it found"
    samples, log_q = model.sample(64, seed=1)
    np.testing.assert_allclose(model.log_prob(samples), log_q, rtol=0, atol=1e-5)
    assert model.network.training
    model.eval()
    np.testing.assert_array_equal(model.log_prob(x), first)
    # while training mode does change the network's output (dropout is live)
    z, _ = model.to_model_coordinates(x)
    model.train()
    with torch.no_grad():
        t1, t2 = model.density.log_prob_terms(z), model.density.log_prob_terms(z)
    assert not torch.equal(t1, t2)

    from openmm_arbg.training import Trainer

    config = dict(n_steps=4, batch_size=64, warmup_steps=1, eval_interval=2, checkpoint_interval=2, seed=0)
    Trainer(model, frames, config, output_dir=str(tmp_path / "train"), resume=False, progress=False).fit()
    assert not model.network.training, "the Trainer must leave the model in evaluation mode"


# ---------------------------------------------------------------------------- (e) the System guard


@pytest.fixture(scope="module")
def chain_move(chain4, tmp_path_factory):
    ms, _, frames = chain4
    path = tmp_path_factory.mktemp("guard") / "m.safetensors"
    ArBG.from_data(ms.topology, frames, n_bins=32, network=TINY_NETWORK, seed=2).save(path)
    return str(path)


def test_system_guard_runs_on_every_apply(chain4, chain_move):
    ms, _, _ = chain4
    restrained = copy.deepcopy(ms.system)
    force = openmm.CustomExternalForce("k*(x^2+y^2+z^2)")
    force.addGlobalParameter("k", 100.0)
    force.addParticle(0, [])
    restrained.addForce(force)
    valid = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
    invalid = states.ThermodynamicState(restrained, 300 * unit.kelvin)
    move = ArBGMove(chain_move, n_attempts=2)
    sampler_state = states.SamplerState(ms.positions)
    context_cache = reference_cache()
    np.random.seed(0)
    n_raised = 0
    for i in range(200):
        if i % 2 == 0:
            move.apply(valid, sampler_state, context_cache)
        else:
            before = sampler_state.positions.value_in_unit(unit.nanometer).copy()
            with pytest.raises(ValueError, match="CustomExternalForce"):
                move.apply(invalid, sampler_state, context_cache)
            n_raised += 1
            np.testing.assert_array_equal(sampler_state.positions.value_in_unit(unit.nanometer), before)
    assert n_raised == 100 and move.n_proposed == 200


def test_system_guard_refuses_constraints_other_molecules_and_bad_temperatures(chain4, chain_move):
    ms, _, _ = chain4
    move = ArBGMove(chain_move)
    context_cache = reference_cache()
    np.random.seed(1)

    def apply(system, temperature=300.0):
        move.apply(states.ThermodynamicState(system, temperature * unit.kelvin), states.SamplerState(ms.positions), context_cache)

    apply(ms.system)  # valid
    constrained = copy.deepcopy(ms.system)
    constrained.addConstraint(1, 2, 0.15)
    with pytest.raises(ValueError, match="constraints"):
        apply(constrained)
    other = copy.deepcopy(ms.system)  # same atom count, another molecule (sulphur masses)
    for i in range(other.getNumParticles()):
        other.setParticleMass(i, 32.06)
    with pytest.raises(ValueError, match="weighs"):
        apply(other)
    fewer = openmm.System()
    for _ in range(3):
        fewer.addParticle(12.0)
    with pytest.raises(ValueError, match="particles"):
        move.apply(states.ThermodynamicState(fewer, 300 * unit.kelvin), states.SamplerState(ms.positions[:3]), context_cache)
    # openmmtools builds thermodynamic states at 0 K and below; the move must refuse them
    for temperature in (0.0, -10.0):
        with pytest.raises(ValueError, match="temperature"):
            apply(ms.system, temperature)
    # ... also when a valid state's temperature is changed in place after it was used
    thermo = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
    sampler_state = states.SamplerState(ms.positions)
    move.apply(thermo, sampler_state, context_cache)
    thermo.temperature = 0.0 * unit.kelvin
    with pytest.raises(ValueError, match="temperature"):
        move.apply(thermo, sampler_state, context_cache)
    # and a System changed in place after a valid apply (the guard keeps no cache)
    system = copy.deepcopy(ms.system)
    thermo = states.ThermodynamicState(system, 300 * unit.kelvin)
    move.apply(thermo, sampler_state, context_cache)
    changed = thermo.system
    changed.addConstraint(0, 1, 0.15)
    thermo.system = changed
    with pytest.raises(ValueError, match="constraints"):
        move.apply(thermo, sampler_state, context_cache)


def test_system_guard_tells_carbon_from_oxygen(chain4, chain_move):
    ms, _, _ = chain4
    other = copy.deepcopy(ms.system)
    for i in range(other.getNumParticles()):
        other.setParticleMass(i, 15.999)
    move = ArBGMove(chain_move)
    with pytest.raises(ValueError, match="weighs"):
        move.apply(states.ThermodynamicState(other, 300 * unit.kelvin), states.SamplerState(ms.positions), reference_cache())
