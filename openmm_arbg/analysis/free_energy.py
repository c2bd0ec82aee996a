"""Free energies with uncertainties, from importance sampling and from MCMC chains.

All free energies are dimensionless (kT of the state they refer to).

* :func:`basin_free_energy_from_weights`: ``F_B - F_A = -ln(sum_B w / sum_A w)`` from importance
  weights, bootstrap error.
* :func:`basin_free_energy_from_chain`: the same from a correlated chain (MD or MCMC) of basin
  labels, error from the statistical inefficiency (pymbar.timeseries) of the delta-method series.
* :func:`state_free_energies`: ``f_k`` of thermodynamic states relative to the normalised model
  (the model is a state with reduced potential ``-log q`` and free energy 0), by EXP for each
  state and by MBAR with the model as an extra state.
"""

import logging
import math

import numpy as np
from scipy.special import logsumexp

logging.getLogger("pymbar").setLevel(logging.ERROR)

__all__ = ["basin_free_energy_from_weights", "basin_free_energy_from_chain", "state_free_energies"]


def _log_sum(log_w, mask):
    return logsumexp(np.where(mask, log_w, -np.inf)) if mask.any() else -np.inf


def basin_free_energy_from_weights(log_w, in_a, in_b, n_bootstrap=500, rng=None):
    """``F_B - F_A`` (kT) from importance weights, with a bootstrap standard error.

    Parameters
    ----------
    log_w : array_like (n,)
        Log importance weights (``-inf`` for zero weight).
    in_a, in_b : array_like of bool (n,)
        Membership of each sample in basins A and B.
    n_bootstrap : int
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    (float, float)
        Estimate and standard error; ``inf`` where a basin has no weight.
    """
    log_w = np.asarray(log_w, dtype=float)
    a, b = np.asarray(in_a, dtype=bool), np.asarray(in_b, dtype=bool)
    est = -(_log_sum(log_w, b) - _log_sum(log_w, a))
    rng = np.random.default_rng(rng)
    n = len(log_w)
    boots = []
    for _ in range(int(n_bootstrap)):
        idx = rng.integers(0, n, n)
        boots.append(-(_log_sum(log_w[idx], b[idx]) - _log_sum(log_w[idx], a[idx])))
    boots = np.asarray(boots)
    finite = np.isfinite(boots)
    if not np.isfinite(est) or finite.mean() < 0.95:
        return float(est), math.inf
    return float(est), float(np.std(boots[finite], ddof=1))


def basin_free_energy_from_chain(in_a, in_b):
    """``F_B - F_A = -ln(p_B / p_A)`` (kT) from a time series of basin memberships.

    The error is the delta-method standard error, ``sqrt(g var(f) / n)`` with
    ``f = 1_B / p_B - 1_A / p_A`` and ``g`` its statistical inefficiency (pymbar).

    Returns
    -------
    (float, float)
        Estimate and standard error; ``inf`` where a basin was never visited.
    """
    from pymbar import timeseries

    a, b = np.asarray(in_a, dtype=float), np.asarray(in_b, dtype=float)
    pa, pb = a.mean(), b.mean()
    if pa == 0 or pb == 0:
        return (math.inf if pb == 0 else -math.inf), math.inf
    f = b / pb - a / pa
    g = timeseries.statistical_inefficiency(f) if f.std() > 0 else 1.0
    return float(-math.log(pb / pa)), float(f.std(ddof=1) * math.sqrt(g / len(f)))


def state_free_energies(reduced_potentials, log_q):
    """Free energies ``f_k = -ln Z_k`` of thermodynamic states relative to the model.

    Parameters
    ----------
    reduced_potentials : array_like (K, n)
        Reduced potential ``u_k(x_n)`` (kT) of every model sample in every state; ``inf`` for
        failed energies or wrong stereochemistry.
    log_q : array_like (n,)
        Model log density of each sample (nats).

    Returns
    -------
    dict
        ``exp`` and ``dexp``: EXP estimates and errors per state (delta method); ``mbar`` and
        ``dmbar``: MBAR with the model as an extra state holding all samples (pymbar). Both are
        ``f_k`` in kT relative to the model's ``f = 0``.
    """
    import pymbar

    u = np.atleast_2d(np.asarray(reduced_potentials, dtype=float))
    lq = np.asarray(log_q, dtype=float)
    K, n = u.shape
    exp, dexp = np.empty(K), np.empty(K)
    for k in range(K):
        log_w = np.where(np.isfinite(u[k]), -u[k] - lq, -np.inf)
        log_mean = logsumexp(log_w) - math.log(n)
        r = np.exp(log_w - log_mean)
        exp[k], dexp[k] = -log_mean, np.std(r, ddof=1) / math.sqrt(n)
    # MBAR: state 0 is the model (u = -log q), holding all samples; infinite energies are
    # replaced by a large finite number (weight exp(-1e6) = 0) for pymbar's solver
    u_kn = np.vstack([-lq[None, :], np.where(np.isfinite(u), u, 1e6)])
    N_k = np.zeros(K + 1, dtype=int)
    N_k[0] = n
    mbar = pymbar.MBAR(u_kn, N_k, initial_f_k=np.concatenate([[0.0], exp]))
    result = mbar.compute_free_energy_differences(compute_uncertainty=True)
    return dict(exp=exp, dexp=dexp, mbar=result["Delta_f"][0, 1:], dmbar=result["dDelta_f"][0, 1:])
