"""Importance sampling with an ArBG proposal and OpenMM energies.

``log w(x) = -u(x) - log q(x)`` with ``u`` the reduced potential (kT) and ``log q`` the model's
exact log density; ``w = 0`` for conformations with the wrong stereochemistry or a failed energy.
Nothing is clipped unless asked for, and clipping warns that it biases.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from ..utils import bootstrap

__all__ = [
    "free_energy_from_probability",
    "log_importance_weights",
    "effective_sample_size",
    "normalized_weights",
    "resample",
    "log_partition_function",
    "weighted_mean",
    "pareto_k",
    "ImportanceSamplingResult",
    "importance_sample",
]


def free_energy_from_probability(p, dp):
    """``F(region) - F(rest) = -ln(p / (1 - p))`` in kT and its standard error ``dp / (p (1 - p))``
    (delta method); ``(+-inf, inf)`` when ``p`` is 0 or 1."""
    if not 0 < p < 1:
        return (math.inf if p <= 0 else -math.inf), math.inf
    return -math.log(p / (1 - p)), dp / (p * (1 - p))


def log_importance_weights(reduced_potentials, log_q, valid=None, clip_top_fraction=0.0):
    """Log importance weights ``-u - log q`` (unnormalised), ``-inf`` where invalid.

    Parameters
    ----------
    reduced_potentials : array_like (n,), kT
    log_q : array_like (n,), nats
    valid : array_like of bool (n,), optional
        False for samples outside the target (e.g. wrong stereochemistry): weight 0.
    clip_top_fraction : float
        If > 0, the largest ``ceil(fraction * n)`` log weights are lowered to the next one. This
        biases every estimate and is off by default; a warning says so.
    """
    u = np.asarray(reduced_potentials, dtype=float)
    lq = np.asarray(log_q, dtype=float)
    if u.shape != lq.shape:
        raise ValueError(f"reduced_potentials {u.shape} and log_q {lq.shape} must have the same shape")
    ok = np.isfinite(u) & np.isfinite(lq)  # failed energies (+inf or NaN) get weight 0
    log_w = np.where(ok, -np.where(ok, u, 0.0) - np.where(ok, lq, 0.0), -np.inf)
    if valid is not None:
        log_w = np.where(np.asarray(valid, dtype=bool), log_w, -np.inf)
    if clip_top_fraction:
        k = int(np.ceil(clip_top_fraction * len(log_w)))
        if 0 < k < len(log_w):
            warnings.warn(
                f"clipping the top {k} of {len(log_w)} log weights biases every importance-sampling estimate",
                stacklevel=2,
            )
            order = np.sort(log_w)
            log_w = np.minimum(log_w, order[-k - 1])
    return log_w


def normalized_weights(log_w):
    """Self-normalised weights (sum to 1)."""
    log_w = np.asarray(log_w, dtype=float)
    if not np.isfinite(log_w).any():
        raise ValueError("every importance weight is zero (no valid sample); cannot normalise")
    return np.exp(log_w - logsumexp(log_w))


def effective_sample_size(log_w):
    """Kish effective sample size ``(sum w)^2 / sum w^2`` (0 if every weight is zero)."""
    log_w = np.asarray(log_w, dtype=float)
    if not np.isfinite(log_w).any():
        return 0.0
    return float(np.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w)))


def resample(log_w, n=None, method="systematic", rng=None):
    """Indices of a resampled population.

    Parameters
    ----------
    log_w : array_like (N,)
    n : int, optional
        Number of draws (default N).
    method : {"systematic", "multinomial"}
    rng : numpy.random.Generator or int, optional
    """
    w = normalized_weights(log_w)
    n = len(w) if n is None else int(n)
    rng = np.random.default_rng(rng)
    if method == "multinomial":
        return rng.choice(len(w), size=n, p=w)
    if method == "systematic":
        cdf = np.cumsum(w)
        cdf[-1] = 1.0
        points = (rng.random() + np.arange(n)) / n
        return np.searchsorted(cdf, points, side="right").clip(0, len(w) - 1)
    raise ValueError(f"method must be 'systematic' or 'multinomial'; got {method!r}")


def log_partition_function(log_w):
    """``log Z_target - log Z_model = log mean w`` and its standard error (delta method).

    Returns
    -------
    (float, float)
        Estimate and standard error, in nats. The free energy of the target relative to the model
        is ``-estimate`` (kT).
    """
    log_w = np.asarray(log_w, dtype=float)
    n = len(log_w)
    log_mean = logsumexp(log_w) - np.log(n)
    if not np.isfinite(log_mean):
        return -np.inf, np.inf
    r = np.exp(log_w - log_mean)  # w / mean(w)
    stderr = np.std(r, ddof=1) / np.sqrt(n)  # relative error of the mean = error of its log
    return float(log_mean), float(stderr)


def weighted_mean(values, log_w, n_bootstrap=200, rng=None):
    """Self-normalised importance-sampling mean of ``values`` with a bootstrap standard error.

    Parameters
    ----------
    values : array_like (n,) or (n, k)
    log_w : array_like (n,)
    n_bootstrap : int
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    (mean, stderr)
    """
    v = np.asarray(values, dtype=float)
    log_w = np.asarray(log_w, dtype=float)
    w = normalized_weights(log_w)
    mean = np.tensordot(w, v, axes=(0, 0))

    dropped = np.full(np.shape(mean), np.nan)  # a resample without any valid sample

    def replicate(idx):
        lw = log_w[idx]
        return np.tensordot(normalized_weights(lw), v[idx], axes=(0, 0)) if np.isfinite(lw).any() else dropped

    boots = bootstrap(replicate, len(w), n_bootstrap, rng)
    if len(boots):
        boots = boots[~np.isnan(boots.reshape(len(boots), -1)).all(axis=1)]
    stderr = np.std(boots, axis=0, ddof=1) if len(boots) > 1 else np.full_like(np.asarray(mean), np.inf)
    return mean, stderr


PARETO_K_THRESHOLD = 0.7


def pareto_k(log_w):
    """Shape ``k`` of a generalised Pareto distribution fitted to the largest importance weights:
    the reliability diagnostic of Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman,
    Yao, Gabry, JMLR 2024).

    The largest ``M = min(N / 5, 3 sqrt(N))`` weights above the next one are fitted by maximum
    likelihood (scipy). ``k < 0.5``: the weights have finite variance and the usual error bars
    hold; ``0.5 <= k < 0.7``: usable, errors less certain; ``k >= 0.7``: the weight distribution is
    so heavy-tailed that estimates converge slowly and their bootstrap or delta-method errors are
    too small (measured in ``tests/test_error_calibration.py``). More proposals or a better model
    are the cure; clipping is not.

    Returns ``nan`` with fewer than 25 finite weights.
    """
    from scipy import stats

    lw = np.asarray(log_w, dtype=float)
    lw = lw[np.isfinite(lw)]
    n = len(lw)
    if n < 25:
        return float("nan")
    w = np.sort(np.exp(lw - lw.max()))
    m = int(min(0.2 * n, 3 * np.sqrt(n)))
    tail = w[-m:] - w[-m - 1]
    if not np.any(tail > 0):
        return 0.0  # all top weights equal: no tail at all
    k, _, _ = stats.genpareto.fit(tail, floc=0)
    return float(k)


@dataclass
class ImportanceSamplingResult:
    """Samples, their log densities, reduced potentials and log weights."""

    positions: np.ndarray  # (n, N, 3) nm
    log_q: np.ndarray  # (n,)
    reduced_potentials: np.ndarray  # (n,) kT
    valid: np.ndarray  # (n,) bool, right stereochemistry
    log_weights: np.ndarray  # (n,)

    @property
    def n(self):
        return len(self.log_weights)

    @property
    def ess(self):
        return effective_sample_size(self.log_weights)

    @property
    def ess_fraction(self):
        return self.ess / self.n

    def log_partition_function(self):
        return log_partition_function(self.log_weights)

    @property
    def pareto_k(self):
        """Tail-shape diagnostic of the weights (:func:`pareto_k`); above 0.7 the error bars are too small."""
        return pareto_k(self.log_weights)

    def expectation(self, values, n_bootstrap=200, rng=None):
        return weighted_mean(values, self.log_weights, n_bootstrap, rng)

    def resample(self, n=None, method="systematic", rng=None):
        """Positions of a resampled (approximately target-distributed) population."""
        return self.positions[resample(self.log_weights, n, method, rng)]

    def summary(self):
        lz, dlz = self.log_partition_function()
        k = self.pareto_k
        return (
            f"{self.n} proposals: ESS {self.ess:.1f} ({100 * self.ess_fraction:.2f}%), "
            f"wrong stereochemistry {100 * (1 - self.valid.mean()):.2f}%, "
            f"failed energies {int((self.valid & ~np.isfinite(self.reduced_potentials)).sum())}, "
            f"log Z(target)/Z(model) = {lz:.3f} +- {dlz:.3f}, Pareto k {k:.2f}"
            + (
                f" (above {PARETO_K_THRESHOLD}: heavy-tailed weights, the error bars are too small; "
                "use more proposals or a better model)"
                if k >= PARETO_K_THRESHOLD
                else ""
            )
        )


def importance_sample(model, reduced_potential, n, proposal_temperature=1.0, batch_size=1024, seed=None, clip_top_fraction=0.0,
                      progress=False):
    """Draw ``n`` proposals from ``model`` and weight them for the target of ``reduced_potential``.

    Parameters
    ----------
    model : openmm_arbg.ArBG
    reduced_potential : openmm_arbg.sampling.energies.ReducedPotential
    n : int
    proposal_temperature : float
        Softmax temperature of the proposal; weights use the tempered model's exact density.
    seed : int, optional
    clip_top_fraction : float
        Biased clipping, off by default (see :func:`log_importance_weights`).
    progress : bool
        Show the progress of drawing and of the energies (a bar on a terminal, lines in logs).
    """
    from ..physics import check_target
    from ..utils import progress_bar

    check_target(reduced_potential.system, model.graph)
    positions, log_q = model.sample(n, proposal_temperature=proposal_temperature, batch_size=batch_size, seed=seed,
                                    progress=progress)
    valid = model.check_stereo(positions)
    u = np.full(len(positions), np.inf)
    index = np.flatnonzero(valid)
    for s in progress_bar(range(0, len(index), batch_size), desc="energies", unit="batch", disable=not progress):
        u[index[s : s + batch_size]] = reduced_potential(positions[index[s : s + batch_size]])
    log_w = log_importance_weights(u, log_q, valid, clip_top_fraction)
    return ImportanceSamplingResult(positions, log_q, u, valid, log_w)
