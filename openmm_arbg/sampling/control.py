"""Inference-time control: fix model coordinates and sample the rest, and the free-energy profile
(potential of mean force) of a coordinate without umbrella windows.

Fixing coordinate ``k`` to ``v``: draw ``z_<k ~ q``, set ``z_k = v``, draw ``z_>k ~ q(. | z_<k, v)``.
The free coordinates have the exact density ``g(z_-k) = q(z_<k) q(z_>k | z_<k, v)``. With the
target ``pi(z) = exp(-u(x(z))) |J(z)|`` and ``w = pi(z_-k, v) / g(z_-k)``, ``mean(w)`` estimates
the marginal density of ``z_k`` at ``v`` (times the partition function), so
``F(v) = -ln mean(w) + const`` for every ``v`` from independent runs; the constant cancels in
differences. Errors: the delta method on ``mean(w)``, with the Pareto k of each point's weights.
"""

import numpy as np
import torch
from scipy.special import logsumexp

from .importance import effective_sample_size, log_importance_weights, pareto_k

__all__ = ["sample_with_fixed", "coordinate_free_energy"]


def sample_with_fixed(model, n, fixed, proposal_temperature=1.0, seed=None):
    """Draw ``n`` configurations with some model coordinates fixed.

    Parameters
    ----------
    model : ArBG
    n : int
    fixed : dict of int -> float
        Model-coordinate index -> value (units of the coordinate: nm or rad).
    proposal_temperature : float
    seed : int, optional

    Returns
    -------
    positions : numpy.ndarray (n, N, 3) nm, canonical frame
    log_g : numpy.ndarray (n,)
        Log density of the drawn coordinates given the fixed ones, minus ``log|J(z)|``, so that
        ``-u(x) - log_g`` is the log weight of the fixed-coordinate estimator.
    """
    D = model.n_coords
    bad = [k for k in fixed if not 0 <= int(k) < D]
    if bad:
        raise ValueError(f"fixed coordinates {bad} are not model-coordinate indices in [0, {D})")
    density = model.density
    generator = torch.Generator(device=model.device).manual_seed(int(seed)) if seed is not None else None
    state = density.start(int(n), proposal_temperature=proposal_temperature)
    while state.position < D:
        if state.position in fixed:
            density.fix(state, float(fixed[state.position]))
        else:
            density.step(state, generator)
    x, log_volume = model.representation.from_model_coordinates(state.z.cpu())
    return x.numpy(), (state.log_q.cpu() - log_volume).numpy()


def coordinate_free_energy(model, reduced_potential, index, values, n_per_value=1000, proposal_temperature=1.0, seed=0):
    """Free-energy profile ``F(v)`` (kT, relative to its minimum) of model coordinate ``index``.

    Parameters
    ----------
    model : ArBG
    reduced_potential : openmm_arbg.sampling.energies.ReducedPotential
    index : int
        Model coordinate (e.g. a torsion; see ``model.representation``).
    values : array_like
        Grid of values (nm or rad).
    n_per_value : int
        Proposals per grid point (energy evaluations: ``len(values) * n_per_value``).

    Returns
    -------
    dict
        ``values``, ``free_energy`` and ``error`` (kT, delta method), ``ess`` and ``pareto_k``
        per value, ``n_evaluations``.
    """
    from ..physics import check_target

    check_target(reduced_potential.system, model.graph)
    values = np.asarray(values, dtype=float)
    log_mean, err, ess, k = [], [], [], []
    for i, v in enumerate(values):
        x, log_g = sample_with_fixed(model, n_per_value, {int(index): v}, proposal_temperature, seed=seed + i)
        ok = model.check_stereo(x)
        u = np.full(len(x), np.inf)
        if ok.any():
            u[ok] = reduced_potential(x[ok])
        log_w = log_importance_weights(u, log_g, ok)
        lm = logsumexp(log_w) - np.log(len(log_w))
        w = np.exp(log_w - logsumexp(log_w)) * len(log_w)  # w / mean(w)
        log_mean.append(lm)
        err.append(float(np.std(w, ddof=1) / np.sqrt(len(w))))  # sd of log mean(w), delta method
        ess.append(effective_sample_size(log_w))
        k.append(pareto_k(log_w))
    f = -np.asarray(log_mean)
    return dict(
        values=values,
        free_energy=f - np.nanmin(f),
        error=np.asarray(err),
        ess=np.asarray(ess),
        pareto_k=np.asarray(k),
        n_evaluations=len(values) * int(n_per_value),
    )
