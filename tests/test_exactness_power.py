"""One-step stationarity of ArBGMove, with power: exact Boltzmann states in, one move, paired
differences of asymmetric observables out.

If ``x ~ pi`` (the exact Boltzmann distribution) and ``K`` is a pi-invariant Markov kernel, then
``x' ~ K(x, .)`` is again distributed as ``pi``, so for any observable ``f`` the paired
difference ``d = f(x') - f(x)`` has mean zero. The harmonic chain's shape distribution factorises
into exactly known one-dimensional laws (bond lengths ``r^2 exp(-beta k (r - r0)^2 / 2)``, angles
``sin(theta) exp(..)``, torsions ``exp(-beta V(phi))``), so thousands of exact states are drawn
directly (inverse CDF on a fine grid per coordinate, chain built by our own NeRF placement,
random rigid rotation and translation), the move is applied ONCE from each, and
``z = mean(d) / (std(d) / sqrt(n))`` is required to be below ``Z_MAX`` for every observable.
Asymmetric observables (``phi > 0``, ``sin phi``, ``phi in [0, 2)``, ``r > median``, ...) catch
errors that the chain's mirror symmetry would hide from symmetric ones.

Each z is computed twice: from the plain paired difference, and with the exact mean ``E_pi f`` as
a control variate (``cv``, see :func:`stationarity_z`), which has the smaller variance when most
states move.

The proposal is a tiny network trained for 100 steps (~2 s) on an independent set of exact
states (``chain4_trained`` in conftest.py): an untrained network proposes almost uniformly over the
binned box and accepts 2-3 % of whole-molecule proposals on this chain, which leaves a one-step
test without power. Exactness of the move does not depend on the proposal, and the states the
move starts from are not the ones the model saw.

Power. ``tests/planted_errors.py`` plants +0.3 nats into one coordinate's log density on half of
its range (the last torsion where > 0, or the last atom's bond length where above its median;
for the Cartesian model z of the last atom and x_b), either in sampling and ``log_prob`` alike
(the draws unchanged: invisible to any check that ``log_prob`` equals the ``log q`` sampling
reports) or in ``log_prob`` only. With the error planted the default statistic must exceed
``Z_MAX`` in at least one case (``test_planted_error_is_detected``), and the default tests, run
in a fresh pytest with ``ARBG_PLANT_ERROR=<mode>:<target>``, must fail
(``test_planted_errors_fail_the_default_tests``); both slow, marker ``power``.

Largest |z| measured (seeds as below; "-" = below Z_MAX, not detected; one core, CPU seconds):

======================  =======  ==========  =========  ==========  =========  =====
case (n states)         exact    sampling+   sampling+  log_prob    log_prob   CPU s
                                 log_prob:   log_prob:  only:       only:
                                 torsion     bond       torsion     bond
======================  =======  ==========  =========  ==========  =========  =====
whole_internal (6000)   1.92     10.6        9.6        5.7         4.3        18
whole_cartesian (4000)  2.71     8.2         8.6        -  (2.8)    -  (2.8)   13
partial_internal (2500) 0.55     6.3         -  (2.9)   -  (2.3)    -  (1.5)   23
======================  =======  ==========  =========  ==========  =========  =====

(16000 states from another seed, exact code: max |z| 2.13, 2.59, 1.25.) An error in ``log_prob``
only enters a whole-molecule apply through the state it starts from (later attempts compare
proposals whose log q comes from sampling), and only changes acceptances that are below one, so
it shifts one step about half as much as the same error in sampling: the Cartesian case, with 4
attempts per state, cannot see it, and in the partial move (a good conditional: acceptance ~0.9)
it is small. Such errors also break ``log_prob == log q reported by sample``, which
tests/test_model_core.py and tests/test_arbg.py check to 1e-6.
"""

import math
import os
import subprocess
import sys

import numpy as np
import openmm
import openmm.unit as unit
import pytest
from openmmtools import cache, states

from openmm_arbg.sampling.mcmc import ArBGMove

from conftest import chain_geometry, exact_chain_states
from planted_errors import MODES, TARGETS, chain_bond_median, planted_error

Z_MAX = 4.0
TEMPERATURE = 300.0
PARTIAL_CUTS = [3, 5]  # internal coordinates of the 4-atom chain: (r, theta, phi) or phi of the last atom

# ---------------------------------------------------------------------------- observables


def chain_observables(topology, positions):
    """Asymmetric (and a few symmetric) observables of every bond, angle and torsion: a dict
    name -> (n,) array."""
    r, theta, phi = chain_geometry(topology, positions)
    median = chain_bond_median(TEMPERATURE)
    out = {}
    for i in range(r.shape[1]):
        out[f"r{i}"] = r[:, i]
        out[f"r{i} > median"] = (r[:, i] > median).astype(float)
    for i in range(theta.shape[1]):
        out[f"theta{i}"] = theta[:, i]
        out[f"cos theta{i}"] = np.cos(theta[:, i])
    for i in range(phi.shape[1]):
        out[f"phi{i} > 0"] = (phi[:, i] > 0).astype(float)
        out[f"sin phi{i}"] = np.sin(phi[:, i])
        out[f"phi{i} in [0, 2)"] = ((phi[:, i] >= 0) & (phi[:, i] < 2.0)).astype(float)
        out[f"cos 3phi{i}"] = np.cos(3 * phi[:, i])
    return out


def exact_expectations(analytic, names, temperature_K=TEMPERATURE):
    """Exact Boltzmann mean of every observable of :func:`chain_observables`, by quadrature."""
    values = {}
    for name in names:
        if name.startswith("r") and name.endswith("> median"):
            values[name] = 1.0 - analytic.probability("bond", 0.0, chain_bond_median(temperature_K), temperature_K)
        elif name.startswith("r"):
            values[name] = analytic.expectation("bond", lambda v: v, temperature_K)
        elif name.startswith("theta"):
            values[name] = analytic.expectation("angle", lambda v: v, temperature_K)
        elif name.startswith("cos theta"):
            values[name] = analytic.expectation("angle", np.cos, temperature_K)
        elif name.endswith("> 0"):
            values[name] = analytic.probability("torsion", 0.0, math.pi, temperature_K)
        elif name.startswith("sin phi"):
            # sin + 1: quad cannot reach a relative tolerance on an integral that is zero
            values[name] = analytic.expectation("torsion", lambda p: np.sin(p) + 1.0, temperature_K) - 1.0
        elif name.endswith("in [0, 2)"):
            values[name] = analytic.probability("torsion", 0.0, 2.0, temperature_K)
        elif name.startswith("cos 3phi"):
            values[name] = analytic.expectation("torsion", lambda p: np.cos(3 * p), temperature_K)
        else:  # pragma: no cover
            raise KeyError(name)
    return values


def _z(e):
    sd = e.std(ddof=1)
    return float(e.mean() / (sd / math.sqrt(len(e)))) if sd > 0 else 0.0


def stationarity_z(before, after, exact):
    """Two z statistics per observable ``f`` (dicts name -> array), both of mean zero for a
    pi-invariant move started from exact states:

    * ``"paired: f"``: ``d = f(after) - f(before)``, ``z = mean(d) / (std(d) / sqrt(n))``;
    * ``"cv: f"``: the paired comparison with the exact mean ``E_pi f`` as a control:
      ``e = (f(after) - E f) - b (f(before) - E f)``, ``b`` the regression coefficient of the
      first on the second. It removes the part of the starting sample's noise that the move
      carries over (all of it where nothing moved, ``b = 1``: the paired test) without adding
      the noise of states the move replaced (``b = 0``: after vs the exact mean): asymptotically
      the smallest variance of the family ``e(b)``, both of those included.
    """
    zs = {}
    for name in before:
        fb, fa, mu = before[name], after[name], exact[name]
        zs[f"paired: {name}"] = _z(fa - fb)
        cb, ca = fb - mu, fa - mu
        var = float(np.mean(cb * cb))
        b = float(np.mean(ca * cb)) / var if var > 0 else 0.0
        zs[f"cv: {name}"] = _z(ca - b * cb)
    return zs


# ---------------------------------------------------------------------------- the test statistic


def one_step_stationarity(system, topology, analytic, model_path, x, n_attempts=1, cuts=None, seed=0):
    """Apply a fresh ArBGMove once from each state in ``x`` (n, N, 3) nm at TEMPERATURE.

    Returns
    -------
    zs : dict name -> z of the paired difference of that observable
    moved : float
        Fraction of states the move changed.
    """
    np.random.seed(seed)
    move = ArBGMove(str(model_path), n_attempts=n_attempts, buffer_size=1000, cuts=cuts)
    thermo = states.ThermodynamicState(system, TEMPERATURE * unit.kelvin)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    after = np.empty_like(x)
    for i in range(len(x)):
        sampler_state = states.SamplerState(x[i] * unit.nanometer)
        move.apply(thermo, sampler_state, context_cache)
        after[i] = sampler_state.positions.value_in_unit(unit.nanometer)
    moved = float(np.mean(np.abs(after - x).max(axis=(1, 2)) > 0))
    before, after = chain_observables(topology, x), chain_observables(topology, after)
    return stationarity_z(before, after, exact_expectations(analytic, tuple(before))), moved


def worst(zs):
    name = max(zs, key=lambda k: abs(zs[k]))
    return name, zs[name]


# ---------------------------------------------------------------------------- fixtures and cases

# n_attempts 1 where the planted "log_prob only" error must stay visible (it enters only the first
# attempt of a whole-molecule apply: later attempts compare proposals with log q from sampling);
# 4 for the Cartesian model, which accepts less. n_states: what ~20 s of one core buys.
CASES = {
    "whole_internal": dict(representation="internal", cuts=None, n_attempts=1, n_states=6000),
    "whole_cartesian": dict(representation="cartesian", cuts=None, n_attempts=4, n_states=4000),
    "partial_internal": dict(representation="internal", cuts=PARTIAL_CUTS, n_attempts=1, n_states=2500),
}
LONG = 4  # the slow variant: LONG times the states, from another seed


@pytest.fixture(scope="module")
def exact_states(chain4_trained):
    _, analytic, _ = chain4_trained
    return exact_chain_states(analytic, max(c["n_states"] for c in CASES.values()), seed=2024)


def run_case(case, chain4_trained, states_nm, n_states=None, seed=11):
    """The statistic of one case on the first ``n_states`` (default: the case's) of ``states_nm``."""
    ms, analytic, paths = chain4_trained
    spec = CASES[case]
    return one_step_stationarity(
        ms.system, ms.topology, analytic, paths[spec["representation"]], states_nm[: n_states or spec["n_states"]],
        n_attempts=spec["n_attempts"], cuts=spec["cuts"], seed=seed,
    )


def check_stationary(case, zs, moved):
    assert moved > 0.3, f"{case}: only {moved:.1%} of the states moved; the test has no power"
    bad = {k: round(v, 2) for k, v in zs.items() if not abs(v) < Z_MAX}
    assert not bad, f"{case}: one move from exact Boltzmann states shifted {bad} (moved {moved:.1%}); all z: {zs}"


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", MODES)
def test_planted_errors_are_planted(mode, chain4_trained, exact_states):
    """The helper does what the power checks assume: +0.3 nats on one coordinate's half range in
    log_prob (and in sample's log q for "sampling_and_log_prob"), the draws themselves unchanged,
    everything restored afterwards."""
    from openmm_arbg import ArBG

    _, _, paths = chain4_trained
    model = ArBG.load(paths["internal"])
    x = exact_states[:200]
    z, _ = model.to_model_coordinates(x)
    clean_lp = model.log_prob(x)
    clean_x, clean_q = model.sample(50, seed=4)
    for target, column, threshold in (("torsion", 5, 0.0), ("bond", 3, chain_bond_median())):
        with planted_error(mode, target):
            lp = model.log_prob(x)
            xs, q = model.sample(50, seed=4)
        np.testing.assert_allclose(lp - clean_lp, 0.3 * (z[:, column].numpy() > threshold), rtol=0, atol=1e-9)
        np.testing.assert_array_equal(xs, clean_x)
        zs, _ = model.to_model_coordinates(xs)
        expected = 0.3 * (zs[:, column].numpy() > threshold) if mode == "sampling_and_log_prob" else 0.0
        np.testing.assert_allclose(q - clean_q, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(model.log_prob(x), clean_lp)


def test_exact_states_have_the_analytic_marginals(chain4_trained, exact_states):
    """The reference sample itself: bond, angle and torsion means within 4.5 standard errors."""
    ms, analytic, _ = chain4_trained
    r, theta, phi = chain_geometry(ms.topology, exact_states)
    n = len(r)
    checks = [
        (r, analytic.expectation("bond", lambda v: v)),
        (np.cos(theta), analytic.expectation("angle", np.cos)),
        (np.cos(3 * phi), analytic.expectation("torsion", lambda p: np.cos(3 * p))),
        (((phi >= 0) & (phi < 2.0)).astype(float), analytic.probability("torsion", 0.0, 2.0)),
    ]
    for values, exact in checks:
        for column in values.T:
            assert abs(column.mean() - exact) < 4.5 * column.std(ddof=1) / math.sqrt(n), (column.mean(), exact)


@pytest.mark.parametrize("case", list(CASES))
def test_one_step_stationarity(case, chain4_trained, exact_states):
    check_stationary(case, *run_case(case, chain4_trained, exact_states))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_one_step_stationarity_long(case, chain4_trained):
    """Slow: LONG times the states (another seed): twice the resolution."""
    _, analytic, _ = chain4_trained
    x = exact_chain_states(analytic, LONG * CASES[case]["n_states"], seed=99)
    check_stationary(case, *run_case(case, chain4_trained, x, n_states=len(x), seed=12))


@pytest.mark.slow
@pytest.mark.power
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", MODES)
def test_planted_error_is_detected(mode, target, chain4_trained, exact_states):
    """With a 0.3-nat error planted in one coordinate, the statistic of the default
    test_one_step_stationarity exceeds Z_MAX in at least one case (the cases in order; the
    first that detects ends the test)."""
    seen = {}
    with planted_error(mode, target):
        for case in CASES:
            zs, _ = run_case(case, chain4_trained, exact_states)
            name, z = worst(zs)
            seen[case] = (name, round(z, 2))
            if abs(z) >= Z_MAX:
                return
    pytest.fail(f"{mode}:{target} planted, yet every case stays below |z| = {Z_MAX}: {seen}")


@pytest.mark.slow
@pytest.mark.power
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", MODES)
def test_planted_errors_fail_the_default_tests(mode, target):
    """End to end: the default stationarity tests, run in a fresh pytest with the error
    planted through ARBG_PLANT_ERROR (read by tests/conftest.py), fail."""
    env = dict(os.environ, ARBG_PLANT_ERROR=f"{mode}:{target}", OMP_NUM_THREADS="1")
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", os.path.join(tests_dir, "test_exactness_power.py"), "-x",
            "-p", "no:cacheprovider", "-m", "not slow", "-k", "test_one_step_stationarity",
        ],
        cwd=os.path.dirname(tests_dir), env=env, capture_output=True, text=True, timeout=1800,
    )
    out = proc.stdout[-4000:]
    assert f"ARBG_PLANT_ERROR={mode}:{target}" in proc.stdout, out  # the error was planted
    assert proc.returncode == 1 and " failed" in proc.stdout, f"exit {proc.returncode} with {mode}:{target} planted:\n{out}"
