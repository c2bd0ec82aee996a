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


def _ar1_runs(rng, lengths, rho, p_threshold=None):
    """Independent stationary AR(1) runs (unit marginal variance) one after another."""
    runs = []
    for n in lengths:
        x = np.empty(n)
        x[0] = rng.normal()
        noise = rng.normal(size=n) * math.sqrt(1 - rho**2)
        for t in range(1, n):
            x[t] = rho * x[t - 1] + noise[t]
        runs.append(x)
    return np.concatenate(runs)


def test_chain_mean_error_of_independent_runs_matches_the_analytic_error():
    """Pooled mean of AR(1) runs of different lengths: the error must match the analytic
    standard error sqrt(sum (n_i/N)^2 g / n_i), g = (1 + rho)/(1 - rho), on average over replicates,
    and the pooled means must scatter by it (z-scores of unit spread)."""
    from openmm_arbg.analysis.free_energy import chain_mean_error

    rng = np.random.default_rng(11)
    lengths, rho = [1500, 4000, 800, 2500], 0.8
    g, N = (1 + rho) / (1 - rho), sum(lengths)
    analytic = math.sqrt(sum((n / N) ** 2 * g / n for n in lengths))
    estimates, z = [], []
    for _ in range(60):
        x = _ar1_runs(rng, lengths, rho)
        err = chain_mean_error(x, lengths)
        estimates.append(err)
        z.append(x.mean() / analytic)
    # the mean estimated error: its replicate spread is about 10 % of it, so 60 replicates pin it to ~2 %
    assert abs(np.mean(estimates) / analytic - 1) < 0.1, (np.mean(estimates), analytic)
    # the pooled means scatter by the analytic error: std of 60 unit normals lies in [0.75, 1.25] at > 99 %
    assert 0.75 < np.std(z, ddof=1) < 1.25
    # one run: the usual s sqrt(g / n) of pymbar's statistical inefficiency, as before
    from pymbar import timeseries

    x = _ar1_runs(rng, [3000], rho)
    assert chain_mean_error(x) == pytest.approx(x.std(ddof=1) * math.sqrt(timeseries.statistical_inefficiency(x) / len(x)))


def test_populations_of_runs_that_never_cross_have_no_error_bar_and_lengths_are_checked():
    from openmm_arbg.analysis.free_energy import chain_mean_error, populations_from_chain

    labels = np.r_[np.zeros(50, int), np.ones(30, int)]  # run 1 always in state 0, run 2 always in state 1
    (p0, e0), (p1, e1) = populations_from_chain(labels, 2, [50, 30])
    assert p0 == pytest.approx(50 / 80) and math.isnan(e0) and math.isnan(e1)
    # read as one run the same labels cross once, and get a (meaningless but finite) error
    assert np.isfinite(populations_from_chain(labels, 2)[0][1])
    for bad in ([50, 20], [80, 0], [40.5, 39.5]):
        with pytest.raises(ValueError, match="run_lengths"):
            chain_mean_error(labels, bad)
