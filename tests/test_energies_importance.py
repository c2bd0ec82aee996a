"""Batched OpenMM energies, importance-sampling estimators, and an energy from Python/torch code
(OpenMM's PythonForce) as an exact target."""

import copy
import math

import numpy as np
import openmm
import openmm.unit as unit
import pytest
import torch
from openmmtools import cache, states

from openmm_arbg import ArBG, ArBGMove
from openmm_arbg.physics import kT_kJ_per_mol
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.sampling.importance import (
    effective_sample_size,
    importance_sample,
    log_importance_weights,
    log_partition_function,
    resample,
    weighted_mean,
)
from openmm_arbg.simulation.md import run_md
from openmm_arbg.simulation.testsystems import harmonic_chain

from conftest import TINY_NETWORK, jittered


def test_reduced_potential_workers_match_single_context(alanine):
    x = jittered(alanine.positions_nm(), 40, 0.01)
    x[7, 3] = np.nan  # a failed energy
    single = ReducedPotential(alanine.system, temperature=300.0)
    u1 = single(x)
    with ReducedPotential(states.ThermodynamicState(alanine.system, 300 * unit.kelvin), n_workers=2) as pool:
        u2 = pool(x)
    assert np.isinf(u1[7]) and u1[7] > 0 and np.isinf(u2[7])
    np.testing.assert_allclose(np.delete(u1, 7), np.delete(u2, 7), rtol=1e-10)
    # u = U / kT
    c = openmm.Context(alanine.system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))
    c.setPositions(x[0])
    U = c.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert abs(u1[0] - U / kT_kJ_per_mol(300.0)) < 1e-9
    with pytest.raises(ValueError, match="shape"):
        single(x[:, :5])
    with pytest.raises(ValueError, match="temperature"):
        ReducedPotential(alanine.system)


def test_weights_ess_and_log_z_on_a_gaussian():
    """Proposal N(0, 2^2), target exp(-x^2/2): Z = sqrt(2 pi); known ESS fraction."""
    rng = np.random.default_rng(0)
    n = 200_000
    x = rng.normal(0, 2.0, n)
    log_q = -0.5 * (x / 2.0) ** 2 - np.log(2.0 * np.sqrt(2 * np.pi))
    u = 0.5 * x**2
    log_w = log_importance_weights(u, log_q)
    log_z, err = log_partition_function(log_w)
    assert abs(log_z - 0.5 * np.log(2 * np.pi)) < 4.5 * err
    # ESS/N = 1 / E_q[(p/q)^2] = sqrt(4 - 1) / 2 ... for sigma_q = 2: (2 sigma^2 - 1)^(1/2) / sigma^2 = sqrt(7)/4
    assert abs(effective_sample_size(log_w) / n - math.sqrt(7) / 4) < 0.01
    mean, se = weighted_mean(x**2, log_w, n_bootstrap=100, rng=1)
    assert abs(mean - 1.0) < 4.5 * se
    for method in ("systematic", "multinomial"):
        idx = resample(log_w, 50_000, method=method, rng=2)
        assert abs(np.var(x[idx]) - 1.0) < 0.03
    # failed energies and wrong stereochemistry get weight zero; clipping warns
    lw = log_importance_weights(np.array([1.0, np.inf, np.nan, 2.0]), np.zeros(4), valid=[True, True, True, False])
    assert np.isfinite(lw[0]) and np.all(np.isneginf(lw[1:]))
    with pytest.warns(UserWarning, match="biases"):
        log_importance_weights(u, log_q, clip_top_fraction=0.001)
    with pytest.raises(ValueError, match="every importance weight is zero"):
        resample(np.full(3, -np.inf))


class TorsionFromTorch:
    """V(phi) = k (1 + cos(3 phi)) of the 0-1-2-3 torsion, computed by torch with autograd forces:
    a stand-in for a machine-learned potential evaluated in Python."""

    def __init__(self, k):
        self.k = k

    def __call__(self, state):
        x = torch.tensor(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=torch.float64, requires_grad=True)
        b0, b1, b2 = x[0] - x[1], x[2] - x[1], x[3] - x[2]
        b1 = b1 / torch.linalg.norm(b1)
        v, w = b0 - (b0 @ b1) * b1, b2 - (b2 @ b1) * b1
        phi = torch.atan2(torch.linalg.cross(b1, v) @ w, v @ w)
        energy = self.k * (1 + torch.cos(3 * phi))
        energy.backward()
        return energy.item(), -x.grad.numpy()


def test_python_force_target_is_sampled_exactly(tmp_path):
    ms, analytic = harmonic_chain(4)
    system = copy.deepcopy(ms.system)
    for i in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(i), openmm.PeriodicTorsionForce):
            system.removeForce(i)
    system.addForce(openmm.PythonForce(TorsionFromTorch(analytic.k_torsion)))
    frames = run_md(ms, str(tmp_path / "md"), n_steps=50_000, report_interval=50, equilibration_steps=500, progress=False)
    path = tmp_path / "m.safetensors"
    ArBG.from_data(ms.topology, frames.xyz, n_bins=32, network=TINY_NETWORK, seed=1).save(path)
    model = ArBG.load(path)
    # importance sampling: log Z of the PythonForce target equals the analytic one
    result = importance_sample(model, ReducedPotential(system, temperature=300.0), 6_000, seed=4)
    log_z, err = result.log_partition_function()
    assert abs(log_z - analytic.log_partition_function(300.0)) < 4.5 * err
    # the move: cos(3 phi) against its analytic mean
    import mdtraj
    from pymbar import timeseries

    np.random.seed(2)
    move = ArBGMove(str(path), n_attempts=200, buffer_size=2000)
    thermo = states.ThermodynamicState(system, 300 * unit.kelvin)
    ss = states.SamplerState(ms.positions)
    cc = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    xs = []
    for _ in range(80):
        move.apply(thermo, ss, cc)
        xs.append(ss.positions.value_in_unit(unit.nanometer))
    traj = mdtraj.Trajectory(np.array(xs, dtype=np.float32), mdtraj.Topology.from_openmm(ms.topology))
    c3 = np.cos(3 * mdtraj.compute_dihedrals(traj, [[0, 1, 2, 3]])[:, 0].astype(float))
    g = timeseries.statistical_inefficiency(c3)
    se = c3.std(ddof=1) * math.sqrt(g / len(c3))
    assert abs(c3.mean() - analytic.expectation("torsion", lambda p: np.cos(3 * p))) < 4.5 * se
