"""Free energies against analytic answers on the chain molecule (torsion basins, temperatures)."""

import math

import mdtraj
import numpy as np
import pytest

from openmm_arbg import ArBG
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.analysis.free_energy import basin_free_energy_from_chain, basin_free_energy_from_weights, state_free_energies
from openmm_arbg.sampling.importance import importance_sample
from openmm_arbg.simulation.md import run_md
from openmm_arbg.simulation.testsystems import harmonic_chain

from conftest import TINY_NETWORK

N_SIGMA = 4.5


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    ms, analytic = harmonic_chain(4)
    out = tmp_path_factory.mktemp("md")
    traj = run_md(ms, str(out), n_steps=400_000, report_interval=20, temperature=300.0, equilibration_steps=1000, progress=False, seed=4)
    model = ArBG.from_data(ms.topology, traj, n_bins=32, network=TINY_NETWORK, seed=3)
    with ReducedPotential(ms.system, temperature=300.0) as u:
        result = importance_sample(model, u, 20_000, seed=5)
    return ms, analytic, traj, model, result


def _phi(ms, x):
    t = mdtraj.Trajectory(np.asarray(x, dtype=np.float32), mdtraj.Topology.from_openmm(ms.topology))
    return mdtraj.compute_dihedrals(t, [[0, 1, 2, 3]])[:, 0]


def test_basin_free_energy_from_weights(sampled):
    ms, analytic, _, _, result = sampled
    phi = _phi(ms, result.positions)
    in_b = (phi >= 0) & (phi < 2.0)
    est, err = basin_free_energy_from_weights(result.log_weights, ~in_b, in_b, rng=0)
    p = analytic.probability("torsion", 0.0, 2.0)
    assert abs(est - (-math.log(p / (1 - p)))) < N_SIGMA * err, (est, err)


def test_basin_free_energy_from_chain(sampled):
    ms, analytic, traj, _, _ = sampled
    phi = _phi(ms, traj.xyz)
    in_b = (phi >= 0) & (phi < 2.0)
    est, err = basin_free_energy_from_chain(~in_b, in_b)
    p = analytic.probability("torsion", 0.0, 2.0)
    assert abs(est - (-math.log(p / (1 - p)))) < N_SIGMA * err, (est, err)
    assert basin_free_energy_from_chain(np.ones(10, bool), np.zeros(10, bool))[1] == math.inf


def test_state_free_energies_exp_and_mbar(sampled):
    ms, analytic, _, _, result = sampled
    temperatures = [300.0, 330.0]
    u = []
    for T in temperatures:
        with ReducedPotential(ms.system, temperature=T) as rp:
            u.append(rp(result.positions))
    fe = state_free_energies(np.array(u), result.log_q)
    for k, T in enumerate(temperatures):
        exact = -analytic.log_partition_function(T)
        assert abs(fe["exp"][k] - exact) < N_SIGMA * fe["dexp"][k]
        assert abs(fe["mbar"][k] - exact) < N_SIGMA * fe["dmbar"][k] + 1e-6
