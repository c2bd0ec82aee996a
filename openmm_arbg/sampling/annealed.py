"""Annealed sequential Monte Carlo from the model to the target, with MCMC moves between stages.

The path of distributions ``pi_b(x) ∝ q(x)^(1-b) exp(-b u(x))`` runs from the model (``b = 0``)
to the Boltzmann distribution (``b = 1``) through inverse-temperature factors
``0 < b_1 < ... < b_{T-1} < b_T = 1``. With ``g(x) = -u(x) - log q(x)`` (the log importance
weight of plain importance sampling), ``log pi_b = log q + b g + const``. Particles start as exact
model samples; at stage ``t`` each is reweighted by ``(b_t - b_{t-1}) g(x)``; for ``t < T`` they
are resampled (systematic) when their ESS falls below ``ess_threshold * n`` and then moved by
``n_steps`` Metropolis-Hastings steps that leave ``pi_{b_t}`` invariant:

* ``"independence"``: ``x' ~ q`` (a fresh model proposal), accepted with
  ``min(1, exp(b_t (g(x') - g(x))))``;
* ``"random-walk"``: every atom moved by ``N(0, step_nm^2)`` in each direction (a symmetric
  proposal in Cartesian space; the target is uniform in the rigid-body coordinates), accepted with
  ``min(1, exp(log pi_b(x') - log pi_b(x)))``, ``log q(x')`` from one ``log_prob`` pass.

``log Z = sum over resampling epochs of log mean(w)`` estimates ``log Z(target) / Z(model)``
(unbiased in ``Z``); the final weighted particles give self-normalised expectations. Every energy
evaluation is counted: ``n`` for the start and ``n`` per MCMC step. After resampling the particles
are dependent: errors come from independent repeats. The MCMC moves and the resampling are where
this differs from importance sampling with ``n`` proposals; whether it pays against importance
sampling with the same number of energy evaluations is measured in ``docs/benchmarks.md``.
"""

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from .importance import effective_sample_size, log_importance_weights, resample
from .smc import SMCResult

__all__ = ["AnnealedSMCResult", "annealed_smc", "tempered_move", "KERNELS"]

KERNELS = ("independence", "random-walk")


@dataclass
class AnnealedSMCResult(SMCResult):
    """:class:`~openmm_arbg.sampling.smc.SMCResult` of :func:`annealed_smc`, with the
    Metropolis-Hastings acceptance of the moves at each intermediate stage (fraction)."""

    acceptance: list


def annealed_smc(model, reduced_potential, n, betas, kernel="independence", n_steps=1, step_nm=0.0005, ess_threshold=0.5,
                 seed=None):
    """Anneal particles from the model to the target (see the module docstring).

    Parameters
    ----------
    model : ArBG
    reduced_potential : ReducedPotential
        The target.
    n : int
        Particles.
    betas : sequence of float
        Intermediate inverse-temperature factors ``b_1 < ... < b_{T-1}`` in ``(0, 1)``; the last
        stage is ``b_T = 1``.
    kernel : {"independence", "random-walk"}
    n_steps : int
        Metropolis-Hastings steps per particle after each intermediate stage (``n`` energy
        evaluations each).
    step_nm : float
        Standard deviation of the random walk per atom and direction, nm (alanine dipeptide: about
        half the moves accepted at 0.0005 nm, 1 % at 0.002 nm).
    ess_threshold : float
        Resample when ESS < ``ess_threshold * n``.
    seed : int, optional

    Returns
    -------
    AnnealedSMCResult
    """
    from ..physics import check_target

    check_target(reduced_potential.system, model.graph)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer (particles); got {n!r}")
    n = int(n)
    betas = [float(b) for b in betas]
    if any(not 0 < b < 1 for b in betas) or betas != sorted(set(betas)):
        raise ValueError(f"betas must be increasing inverse-temperature factors in (0, 1); got {betas}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 0:
        raise ValueError(f"n_steps must be an integer >= 0; got {n_steps!r}")
    if not step_nm > 0:
        raise ValueError(f"step_nm must be positive (nm); got {step_nm!r}")
    if not 0 < ess_threshold <= 1:
        raise ValueError(f"ess_threshold must be in (0, 1] (a fraction of n); got {ess_threshold!r}")
    rng = np.random.default_rng(seed)

    x, log_q, g = _propose(model, reduced_potential, n, rng)
    n_evaluations = n
    log_w, log_z, n_resamplings, ess_history, acceptance = np.zeros(n), 0.0, 0, [], []
    previous = 0.0
    for beta in betas + [1.0]:
        log_w = log_w + (beta - previous) * g  # g is finite or -inf, and beta > previous
        previous = beta
        ess_history.append(effective_sample_size(log_w))
        if beta == 1.0:
            break
        if ess_history[-1] < ess_threshold * n:
            log_z += logsumexp(log_w) - np.log(n)
            idx = resample(log_w, n, rng=rng)
            x, log_q, g, log_w = x[idx], log_q[idx], g[idx], np.zeros(n)
            n_resamplings += 1
        accepted = 0
        for _ in range(int(n_steps)):
            x, log_q, g, accept = tempered_move(model, reduced_potential, x, log_q, g, beta, kernel, step_nm, rng)
            n_evaluations += n
            accepted += int(accept.sum())
        acceptance.append(accepted / (n * n_steps) if n_steps else float("nan"))
    log_z += logsumexp(log_w) - np.log(n)
    return AnnealedSMCResult(x, log_w, float(log_z), n_resamplings, ess_history, n_evaluations, acceptance)


def _log_weight(model, reduced_potential, x, log_q):
    """``g = -u(x) - log q(x)`` (n,), ``-inf`` for wrong-handed or unsupported configurations."""
    ok = model.check_stereo(x) & np.isfinite(log_q)
    u = np.full(len(x), np.inf)
    if ok.any():
        u[ok] = reduced_potential(x[ok])
    return log_importance_weights(u, log_q, ok)


def _propose(model, reduced_potential, n, rng):
    """``n`` fresh model proposals: positions, ``log q`` and ``g``."""
    x, log_q = model.sample(n, seed=int(rng.integers(2**62)))
    return x, log_q, _log_weight(model, reduced_potential, x, log_q)


def tempered_move(model, reduced_potential, x, log_q, g, beta, kernel="independence", step_nm=0.0005, rng=None):
    """One Metropolis-Hastings step per particle that leaves ``pi_b ∝ q exp(b g)`` invariant.

    Parameters
    ----------
    model : ArBG
    reduced_potential : ReducedPotential
    x : numpy.ndarray (n, N, 3), nm
    log_q, g : numpy.ndarray (n,)
        ``model.log_prob(x)`` and ``-u(x) - log q(x)`` of the particles.
    beta : float
        ``b`` in [0, 1].
    kernel : {"independence", "random-walk"}
    step_nm : float
        Random walk: standard deviation per atom and direction, nm.
    rng : numpy.random.Generator, optional

    Returns
    -------
    x, log_q, g : the particles after the step
    accepted : numpy.ndarray of bool (n,)
    """
    rng = np.random.default_rng(rng)
    n = len(x)
    if kernel == "independence":
        x_new, log_q_new, g_new = _propose(model, reduced_potential, n, rng)
        log_alpha = beta * (g_new - g)  # q cancels: pi_b(x') q(x) / (pi_b(x) q(x'))
    elif kernel == "random-walk":
        x_new = x + rng.normal(scale=step_nm, size=x.shape)
        log_q_new = model.log_prob(x_new)
        g_new = _log_weight(model, reduced_potential, x_new, log_q_new)
        with np.errstate(invalid="ignore"):  # a particle of weight 0 (g = -inf) may move anywhere
            log_alpha = (log_q_new + beta * g_new) - (log_q + beta * g)  # symmetric proposal
    else:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    with np.errstate(invalid="ignore"):
        accept = np.log(rng.random(n)) < np.where(np.isfinite(log_alpha), log_alpha, -np.inf)
    x = np.where(accept[:, None, None], x_new, x)
    return x, np.where(accept, log_q_new, log_q), np.where(accept, g_new, g), accept
