"""Are the reported error bars honest? Over many independent runs, (estimate - exact) / error must
be distributed like a unit normal: mean square near 1 (a chi-square test with fixed seeds)."""

import math

import numpy as np
import pytest
from scipy import stats

from openmm_arbg import ArBG
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.analysis.free_energy import basin_free_energy_from_weights
from openmm_arbg.sampling.importance import PARETO_K_THRESHOLD, importance_sample, log_importance_weights, pareto_k
from openmm_arbg.simulation.md import run_md
from openmm_arbg.simulation.testsystems import harmonic_chain

from conftest import TINY_NETWORK

N_RUNS = 30


def test_pareto_k_separates_light_and_heavy_tailed_weights():
    """Target N(0, 1); a wider Gaussian proposal has bounded weights, a much narrower one weights
    of infinite variance (k = 1 - sigma_q^2 for sigma_q < 1)."""
    rng = np.random.default_rng(1)
    ks = {}
    for sigma_q in (2.0, 0.4):
        x = rng.normal(0, sigma_q, 20_000)
        log_q = -0.5 * (x / sigma_q) ** 2 - np.log(sigma_q * np.sqrt(2 * np.pi))
        ks[sigma_q] = pareto_k(log_importance_weights(0.5 * x**2, log_q))
    assert ks[2.0] < 0.5
    assert ks[0.4] > PARETO_K_THRESHOLD
    assert np.isnan(pareto_k(np.zeros(10)))


def _runs(ms, model, n, seed0):
    import mdtraj

    runs = []
    with ReducedPotential(ms.system, temperature=300.0) as u:
        for seed in range(N_RUNS):
            result = importance_sample(model, u, n, seed=seed0 + seed)
            traj = mdtraj.Trajectory(result.positions.astype(np.float32), mdtraj.Topology.from_openmm(ms.topology))
            runs.append((result, mdtraj.compute_dihedrals(traj, [[0, 1, 2, 3]])[:, 0]))
    return runs


@pytest.fixture(scope="module")
def chain_system(tmp_path_factory):
    ms, exact = harmonic_chain(4, k_torsion=5.0)
    frames = run_md(ms, str(tmp_path_factory.mktemp("md")), n_steps=20_000, report_interval=20, equilibration_steps=500, progress=False)
    return ms, exact, frames.xyz


@pytest.fixture(scope="module")
def chain_runs(chain_system, tmp_path_factory):
    """30 runs with a briefly trained model as the proposal."""
    from openmm_arbg.training import Trainer

    ms, exact, xyz = chain_system
    model = ArBG.from_data(ms.topology, xyz, n_bins=32, network=TINY_NETWORK, seed=3)
    cfg = {"n_steps": 300, "batch_size": 128, "learning_rate": 3e-3, "warmup_steps": 20, "eval_interval": 100}
    Trainer(model, xyz, cfg, output_dir=str(tmp_path_factory.mktemp("model")), progress=False).fit()
    return exact, _runs(ms, model, 1000, 100)


def _check_calibrated(z):
    z = np.asarray(z)
    assert np.isfinite(z).all()
    chi2 = float(np.sum(z**2))
    # two-sided 99.9 % interval of a chi-square with N_RUNS degrees of freedom
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], len(z))
    assert lo < chi2 < hi, f"sum of squared z-scores {chi2:.1f} outside [{lo:.1f}, {hi:.1f}]: error bars are not calibrated"


def test_importance_sampling_log_z_errors_are_calibrated(chain_runs):
    exact, runs = chain_runs
    assert np.median([r.pareto_k for r, _ in runs]) < PARETO_K_THRESHOLD
    log_z = exact.log_partition_function(300.0)
    z = []
    for result, _ in runs:
        est, err = result.log_partition_function()
        z.append((est - log_z) / err)
    _check_calibrated(z)


def test_importance_sampling_basin_free_energy_errors_are_calibrated(chain_runs):
    exact, runs = chain_runs
    p = exact.probability("torsion", 0.0, math.pi / 3, 300.0)  # one of the three torsion wells, half of it
    f_exact = -math.log(p / (1 - p))
    z = []
    for i, (result, phi) in enumerate(runs):
        inside = (phi >= 0) & (phi < math.pi / 3)
        est, err = basin_free_energy_from_weights(result.log_weights, ~inside, inside, n_bootstrap=300, rng=i)
        z.append((est - f_exact) / err)
    _check_calibrated(z)


def test_heavy_tailed_weights_are_flagged(chain_system):
    """An untrained model as proposal: ESS of about 1 %, delta-method errors of log Z too small by
    about 1.5x (measured), and the Pareto k diagnostic says so."""
    ms, exact, xyz = chain_system
    model = ArBG.from_data(ms.topology, xyz, n_bins=32, network=TINY_NETWORK, seed=3)
    runs = _runs(ms, model, 1500, 100)
    ks = [r.pareto_k for r, _ in runs]
    assert np.median(ks) > PARETO_K_THRESHOLD
    assert "error bars are too small" in runs[int(np.argmax(ks))][0].summary()
