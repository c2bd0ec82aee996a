"""Free energies with uncertainties, from importance sampling and from MCMC chains.

All free energies are dimensionless (kT of the state they refer to).

* :func:`basin_free_energy_from_weights`: ``F_B - F_A = -ln(sum_B w / sum_A w)`` from importance
  weights, bootstrap error.
* :func:`basin_free_energy_from_chain`: the same from a correlated chain (MD or MCMC) of basin
  labels, error from the statistical inefficiency (pymbar.timeseries) of the delta-method series.
* :func:`populations_from_chain`: state populations from a correlated chain of labels, errors
  from the statistical inefficiency.
* :func:`chain_mean_error`: the standard error of a chain's mean, for one run or several
  independent runs given one after another (MD replicas).
* :func:`state_free_energies`: ``f_k`` of thermodynamic states relative to the normalised model
  (the model is a state with reduced potential ``-log q`` and free energy 0), by EXP for each
  state and by MBAR with the model as an extra state.
* :func:`alanine_dipeptide_analysis`: the alanine dipeptide basins' populations and free
  energies from a chain or from importance weights (the package's one place for them).
"""

import math

import numpy as np
from scipy.special import logsumexp

from ..utils import bootstrap

__all__ = [
    "basin_free_energy_from_weights",
    "basin_free_energy_from_chain",
    "populations_from_chain",
    "chain_mean_error",
    "state_free_energies",
    "alanine_dipeptide_analysis",
    "ALANINE_FREE_ENERGIES",
]


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
    boots = bootstrap(lambda idx: -(_log_sum(log_w[idx], b[idx]) - _log_sum(log_w[idx], a[idx])), len(log_w), n_bootstrap, rng)
    finite = np.isfinite(boots)
    if not np.isfinite(est) or finite.mean() < 0.95:
        return float(est), math.inf
    return float(est), float(np.std(boots[finite], ddof=1))


def chain_mean_error(series, run_lengths=None):
    """Standard error of the mean of a correlated time series made of independent runs.

    Each run contributes ``(n_i / n)^2 s_i^2 g_i / n_i``, with ``s_i^2`` its variance and ``g_i``
    its statistical inefficiency (pymbar); one run gives the usual ``s sqrt(g / n)``. A run whose
    series is constant contributes nothing (it shows no fluctuation to measure).

    Parameters
    ----------
    series : array_like (n,)
        The runs one after another.
    run_lengths : sequence of int, optional
        Length of each run (summing to ``n``); default: one run.

    Returns
    -------
    float
    """
    from pymbar import timeseries

    series = np.asarray(series, dtype=float).reshape(-1)
    lengths = _split_lengths(len(series), run_lengths)
    var = 0.0
    for run in np.split(series, np.cumsum(lengths)[:-1]):
        if len(run) > 1 and run.std() > 0:
            g = timeseries.statistical_inefficiency(run)
            var += (len(run) / len(series)) ** 2 * run.var(ddof=1) * g / len(run)
    return float(math.sqrt(var))


def _split_lengths(n, run_lengths=None):
    """``run_lengths`` checked to be positive integers summing to ``n`` (default ``[n]``)."""
    if run_lengths is None:
        return [int(n)]
    lengths = [int(k) for k in run_lengths]
    if any(k < 1 for k in lengths) or sum(lengths) != n or any(k != r for k, r in zip(lengths, run_lengths)):
        raise ValueError(f"run_lengths must be positive integers summing to the {n} frames; got {list(run_lengths)}")
    return lengths


def basin_free_energy_from_chain(in_a, in_b, run_lengths=None):
    """``F_B - F_A = -ln(p_B / p_A)`` (kT) from a time series of basin memberships.

    The error is the delta-method standard error, ``sqrt(g var(f) / n)`` with
    ``f = 1_B / p_B - 1_A / p_A`` and ``g`` its statistical inefficiency (pymbar); with
    ``run_lengths`` (independent runs one after another) each run's term is combined as in
    :func:`chain_mean_error`.

    Returns
    -------
    (float, float)
        Estimate and standard error; ``inf`` where a basin was never visited.
    """
    a, b = np.asarray(in_a, dtype=float), np.asarray(in_b, dtype=float)
    pa, pb = a.mean(), b.mean()
    if pa == 0 or pb == 0:
        return (math.inf if pb == 0 else -math.inf), math.inf
    f = b / pb - a / pa
    return float(-math.log(pb / pa)), chain_mean_error(f, run_lengths)


def populations_from_chain(labels, n_states, run_lengths=None):
    """Populations of states ``0 .. n_states - 1`` in a time series of labels, with standard errors
    ``std * sqrt(g / n)`` from the statistical inefficiency ``g`` of each indicator (pymbar).

    Parameters
    ----------
    labels : array_like (n,) of int
    n_states : int
    run_lengths : sequence of int, optional
        Lengths of independent runs given one after another (several MD replicas): the error
        combines each run's (:func:`chain_mean_error`). Default: one run.

    Returns
    -------
    list of (float, float)
        Population and error per state; the error is ``nan`` for a state never or always visited,
        and for one that no run both enters and leaves (its runs disagree, but none shows how
        often it is crossed).
    """
    labels = np.asarray(labels).reshape(-1)
    lengths = _split_lengths(len(labels), run_lengths)
    out = []
    for k in range(int(n_states)):
        series = (labels == k).astype(float)
        p = float(series.mean()) if len(series) else math.nan
        err = chain_mean_error(series, lengths) if 0 < p < 1 else math.nan
        out.append((p, err if err > 0 else math.nan))
    return out


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


ALANINE_FREE_ENERGIES = ("F(alpha_R) - F(beta)", "F(phi>0) - F(beta)", "F(phi>0) - F(phi<0)")


def alanine_dipeptide_analysis(positions, topology, log_weights=None, rng=None, run_lengths=None):
    """Alanine dipeptide's basins (:func:`~openmm_arbg.analysis.observables.alanine_dipeptide_basins`):
    populations and free energies, from a chain or from importance weights.

    Parameters
    ----------
    positions : array_like (n, N, 3), nm
        Frames of a chain (MD or MCMC, in time order), or importance-sampling proposals.
    topology : mdtraj.Topology, openmm.app.Topology or MolecularGraph
        Alanine dipeptide (its backbone phi and psi are used).
    log_weights : array_like (n,), optional
        Importance weights of the proposals; without them ``positions`` are a chain.
    rng : numpy.random.Generator or int, optional
        Bootstrap of the weighted estimates.
    run_lengths : sequence of int, optional
        For a chain made of independent runs one after another (several MD replicas): their
        lengths, so errors combine each run's statistical inefficiency.

    Returns
    -------
    dict
        ``populations``: basin name (:data:`BASINS`) -> (probability, error); ``free_energies``:
        label (:data:`ALANINE_FREE_ENERGIES`) -> (kT, error); ``basins``: the label of every frame.
        Errors come from the statistical inefficiency for a chain and from bootstrap resamples for
        weighted samples.
    """
    from ..sampling.importance import weighted_mean
    from .observables import BASINS, alanine_dipeptide_basins, backbone_dihedrals

    phi, psi = backbone_dihedrals(positions, topology)
    if phi.shape[1] != 1 or psi.shape[1] != 1:
        raise ValueError(f"alanine dipeptide has one phi and one psi dihedral; this molecule has {phi.shape[1]} and {psi.shape[1]}")
    basin = alanine_dipeptide_basins(phi, psi)
    pairs = dict(zip(ALANINE_FREE_ENERGIES, [(basin == 0, basin == 1), (basin == 0, basin == 2), (basin < 2, basin == 2)]))
    if run_lengths is not None and log_weights is not None:
        raise ValueError("run_lengths belong to a chain; importance-weighted samples have none")
    if log_weights is None:
        populations = populations_from_chain(basin, len(BASINS), run_lengths)
        free_energies = {label: basin_free_energy_from_chain(a, b, run_lengths) for label, (a, b) in pairs.items()}
    else:
        rng = np.random.default_rng(rng)
        one_hot = (basin[:, None] == np.arange(len(BASINS))[None, :]).astype(float)
        mean, err = weighted_mean(one_hot, log_weights, rng=rng)
        populations = list(zip(mean.tolist(), np.broadcast_to(err, mean.shape).tolist()))
        free_energies = {label: basin_free_energy_from_weights(log_weights, a, b, rng=rng) for label, (a, b) in pairs.items()}
    return dict(populations=dict(zip(BASINS, populations)), free_energies=free_energies, basins=basin)
