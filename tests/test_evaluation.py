"""The paper's metrics on cases with known answers."""

import numpy as np
import pytest

from openmm_arbg.analysis.evaluation import (energy_histogram_plot, energy_w2, ramachandran_plot, reference_floor, tica_w2,
                                             torus_w2)


def test_energy_w2_of_shifted_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, 20000)
    assert abs(energy_w2(a, a + 0.7) - 0.7) < 1e-9  # a pure shift moves every point by 0.7
    assert abs(energy_w2(a, rng.normal(0.0, 2.0, 20000)) - 1.0) < 0.05  # W2 of N(0,1), N(0,4): |2 - 1|
    with pytest.raises(ValueError, match="finite"):
        energy_w2([1.0, np.inf], [1.0, 2.0])


def test_torus_w2_uses_the_periodic_distance():
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.3, 0.3, (500, 2)) + np.pi - 0.35  # near the +pi edge
    b = a + 0.5  # crosses the edge: the torus distance is 0.5 per coordinate, not 2 pi - 0.5
    b = (b + np.pi) % (2 * np.pi) - np.pi
    value, n = torus_w2(a, b, max_points=500)
    assert n == 500 and abs(value - 0.5 * np.sqrt(2)) < 1e-6
    assert torus_w2(a, a)[0] < 1e-9


def test_tica_w2_detects_a_missing_state():
    rng = np.random.default_rng(2)
    # a slow two-state process plus noise: TICA's first component separates the states
    state = np.repeat(rng.integers(0, 2, 200), 100)
    ref = np.stack([state + 0.1 * rng.standard_normal(len(state)), rng.standard_normal(len(state))], 1)
    same, _ = tica_w2(ref, ref[rng.permutation(len(ref))[:3000]], lag=10, max_points=3000)
    only_one = ref[state == 0][:3000]
    missing, _ = tica_w2(ref, only_one, lag=10, max_points=3000)
    assert missing > 5 * same
    with pytest.raises(ValueError, match="longer than the TICA lag"):
        tica_w2(ref[:50], ref[:50], lag=100)
    # several runs joined: one run is the plain case; runs are separate time series, so a reference
    # whose runs each hold one state still finds the state axis, and its lengths must add up
    assert tica_w2(ref, only_one, lag=10, max_points=3000, lengths=[len(ref)]) == (missing, 3000)
    runs = np.concatenate([ref[state == 0][:5000], ref[state == 1][:5000]])
    assert tica_w2(runs, only_one, lag=10, max_points=3000, lengths=[5000, 5000])[0] > 5 * same
    with pytest.raises(ValueError, match="do not add up"):
        tica_w2(runs, only_one, lag=10, lengths=[5000, 4000])
    with pytest.raises(ValueError, match="no reference run is longer than the TICA lag"):
        tica_w2(runs, only_one, lag=6000, lengths=[5000, 5000])


def test_reference_floor_compares_the_two_halves(alanine):
    rng = np.random.default_rng(4)
    positions = np.repeat(np.asarray(alanine.positions_nm())[None], 4000, 0)
    # stationary energies: the halves differ only by sampling noise, about sqrt(2 / 2000) for N(0, 1)
    stationary = reference_floor(positions, rng.normal(0.0, 1.0, 4000), alanine.topology, structural=False)
    assert stationary["n_half"] == 2000 and stationary["e_w2"] < 0.1 and np.isnan(stationary["t_w2"])
    # a reference whose second half drifted by 1 kT: the halves disagree by the drift
    drift = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(1.0, 1.0, 2000)])
    assert abs(reference_floor(positions, drift, alanine.topology, structural=False)["e_w2"] - 1.0) < 0.1
    # structures: frames jittered alike in both halves, against a second half jittered 4x more
    x = positions[:400] + rng.normal(0.0, 0.004, (400, *positions.shape[1:]))
    alike = reference_floor(x, np.zeros(400), alanine.topology, lag=10, max_points=200)
    y = np.concatenate([x[:200], positions[:200] + rng.normal(0.0, 0.016, (200, *positions.shape[1:]))])
    apart = reference_floor(y, np.zeros(400), alanine.topology, lag=10, max_points=200)
    assert alike["e_w2"] == 0.0 and 0 < alike["t_w2"] and np.isfinite(alike["tica_w2"])
    assert apart["t_w2"] > 2 * alike["t_w2"]
    assert np.isnan(reference_floor(x, np.zeros(400), alanine.topology, lag=200)["tica_w2"])  # a half not longer than the lag
    # two runs of 100 and 300 frames: the first half holds all of one and 100 frames of the other
    runs = reference_floor(x, np.zeros(400), alanine.topology, lag=10, max_points=200, lengths=[100, 300])
    assert runs["t_w2"] == alike["t_w2"] and np.isfinite(runs["tica_w2"])
    assert np.isnan(reference_floor(x, np.zeros(400), alanine.topology, lag=150, lengths=[150, 250])["tica_w2"])


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(3)
    phi, psi = rng.uniform(-180, 180, 1000), rng.uniform(-180, 180, 1000)
    p = ramachandran_plot([("a", phi, psi, None), ("b", phi, psi, rng.random(1000))], str(tmp_path / "r.png"))
    q = energy_histogram_plot([("x", rng.normal(size=500), None), ("y", rng.normal(1, 1, 500), None)], str(tmp_path / "e.png"))
    assert (tmp_path / "r.png").stat().st_size > 1000 and (tmp_path / "e.png").stat().st_size > 1000
    assert p.endswith("r.png") and q.endswith("e.png")
