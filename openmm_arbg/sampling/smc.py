"""Sequential Monte Carlo over partial structures.

Particles are grown by the model in stages of model coordinates ``0 < c_1 < ... < c_M = D``.
After stage ``m < M`` they are reweighted by an intermediate target
``gamma_m(z_<=c_m) = q(z_<=c_m) exp(-lambda_m u_m)``, with ``u_m`` the reduced energy of the atoms
placed so far (a sub-System of the bonded and non-bonded terms among them; any positive
``gamma_m`` keeps the estimator exact, good ones only reduce its variance), and resampled
(systematic) when the ESS falls below ``ess_threshold * N``. The final target is
``gamma_M = pi(z) = exp(-u(x)) |J(z)|``. The incremental weights are

    log w_m = -lambda_m u_m + lambda_{m-1} u_{m-1}                        (m < M)
    log w_M = -u(x) - log q(z) + log|J(z)| + lambda_{M-1} u_{M-1}

and ``log Z = sum over resampling epochs of log mean(w)`` (unbiased in ``Z``, not in ``log Z``).
After resampling the particles are dependent: errors come from independent repeats, not from
the final ESS. Every energy evaluation, partial ones included, is counted.
"""

from dataclasses import dataclass

import numpy as np
import openmm
import torch
from scipy.special import logsumexp

from .importance import effective_sample_size, resample

__all__ = ["SMCResult", "partial_system", "placed_atoms", "smc_sample"]


def placed_atoms(representation, n_coords):
    """Boolean mask of the atoms whose position is fixed by the first ``n_coords`` model
    coordinates (every coordinate of an atom's row, and of the atoms it is placed from)."""
    placed = np.zeros(representation.n_atoms, dtype=bool)
    last = {}
    for j, atom in enumerate(representation.coordinate_atoms):
        last[atom] = j
    a = representation.anchors[0]
    placed[a] = True
    for atom, j in last.items():
        placed[atom] = j < n_coords
    return placed


def partial_system(system, mask):
    """A copy of ``system`` whose energy is that of the atoms in ``mask`` among themselves:
    harmonic bonds and angles, periodic torsions and (NoCutoff) non-bonded terms whose atoms are
    all in ``mask``; other forces (implicit solvent, CMAP, custom) are dropped. Particles keep
    their indices."""
    out = openmm.System()
    for i in range(system.getNumParticles()):
        out.addParticle(system.getParticleMass(i))
    inside = lambda *idx: all(mask[i] for i in idx)  # noqa: E731
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            f = openmm.HarmonicBondForce()
            for k in range(force.getNumBonds()):
                i, j, r0, kb = force.getBondParameters(k)
                if inside(i, j):
                    f.addBond(i, j, r0, kb)
        elif isinstance(force, openmm.HarmonicAngleForce):
            f = openmm.HarmonicAngleForce()
            for k in range(force.getNumAngles()):
                i, j, l, t0, ka = force.getAngleParameters(k)
                if inside(i, j, l):
                    f.addAngle(i, j, l, t0, ka)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            f = openmm.PeriodicTorsionForce()
            for k in range(force.getNumTorsions()):
                i, j, l, m, n, phase, kt = force.getTorsionParameters(k)
                if inside(i, j, l, m):
                    f.addTorsion(i, j, l, m, n, phase, kt)
        elif isinstance(force, openmm.NonbondedForce):
            f = openmm.NonbondedForce()
            f.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
            for i in range(force.getNumParticles()):
                q, sigma, eps = force.getParticleParameters(i)
                f.addParticle(q if mask[i] else 0.0, sigma, eps if mask[i] else 0.0)
            for k in range(force.getNumExceptions()):
                i, j, qq, sigma, eps = force.getExceptionParameters(k)
                f.addException(i, j, qq if inside(i, j) else 0.0, sigma, eps if inside(i, j) else 0.0)
        else:
            continue
        out.addForce(f)
    return out


@dataclass
class SMCResult:
    """Final particles and weights of one SMC run.

    Attributes
    ----------
    positions : numpy.ndarray (n, N, 3) nm
    log_weights : numpy.ndarray (n,)
        Final log importance weights of the particles (since the last resampling).
    log_z : float
        ``log`` of the estimate of ``Z(target) / Z(model)`` (the model is normalised).
    n_resamplings : int
    ess_history : list of float
        ESS after each stage's reweighting.
    n_evaluations : int
        Energy evaluations, partial ones included.
    """

    positions: np.ndarray
    log_weights: np.ndarray
    log_z: float
    n_resamplings: int
    ess_history: list
    n_evaluations: int

    def expectation(self, values):
        """Self-normalised estimate of the mean of ``values`` (one per particle)."""
        w = np.exp(self.log_weights - logsumexp(self.log_weights))
        return float(np.sum(w * np.asarray(values, dtype=float)))


def smc_sample(model, reduced_potential, n, stages, lambdas=None, ess_threshold=0.5, proposal_temperature=1.0, seed=None):
    """Run SMC over partial structures.

    Parameters
    ----------
    model : ArBG
    reduced_potential : ReducedPotential
        The final target.
    n : int
        Particles.
    stages : sequence of int
        Intermediate cuts ``c_1 < ... < c_{M-1}`` in ``(0, D)``; the last stage ends at ``D``.
    lambdas : sequence of float, optional
        Inverse-temperature factor of each intermediate sub-energy (default 1).
    ess_threshold : float
        Resample when ESS < ``ess_threshold * n``.
    """
    from ..physics import check_target
    from .energies import ReducedPotential

    check_target(reduced_potential.system, model.graph)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer (particles); got {n!r}")
    n = int(n)
    if not 0 < ess_threshold <= 1:
        raise ValueError(f"ess_threshold must be in (0, 1] (a fraction of n); got {ess_threshold!r}")
    D = model.n_coords
    cuts = [int(c) for c in stages]
    if any(not 0 < c < D for c in cuts) or cuts != sorted(set(cuts)):
        raise ValueError(f"stages must be increasing model-coordinate cuts in (0, {D}); got {list(stages)}")
    lambdas = [1.0] * len(cuts) if lambdas is None else [float(v) for v in lambdas]
    if len(lambdas) != len(cuts):
        raise ValueError("give one lambda per intermediate stage")
    if not all(v >= 0 for v in lambdas):
        raise ValueError(f"lambdas must be >= 0 (inverse-temperature factors); got {lambdas}")
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=model.device).manual_seed(int(rng.integers(2**62)))
    density = model.density
    fill = 0.5 * (density.discretizer.lo + density.discretizer.hi)  # values for coordinates not drawn yet

    def positions(state):
        z = state.z.clone().cpu()
        z[:, state.position :] = fill[state.position :]
        x, log_volume = model.representation.from_model_coordinates(z)
        return x.numpy(), log_volume.numpy()

    state = density.start(n, proposal_temperature=proposal_temperature)
    log_w = np.zeros(n)
    log_z, n_resamplings, ess_history, n_evaluations = 0.0, 0, [], 0
    previous = np.zeros(n)  # lambda_{m-1} u_{m-1} of each particle
    for cut, lam in zip(cuts + [D], lambdas + [None]):
        while state.position < cut:
            density.step(state, generator)
        x, log_volume = positions(state)
        if lam is None:  # the final target
            ok = model.check_stereo(x)
            u = np.full(n, np.inf)
            u[ok] = reduced_potential(x[ok])
            n_evaluations += int(ok.sum())
            log_q = state.log_q.cpu().numpy()
            inc = -u - log_q + log_volume + previous
        else:
            mask = placed_atoms(model.representation, cut)
            with ReducedPotential(partial_system(reduced_potential.system, mask), temperature=reduced_potential.temperature,
                                  platform=reduced_potential.platform) as sub:
                u = sub(x)
            n_evaluations += n
            current = lam * u
            inc = -current + previous
            previous = current
        inc = np.where(np.isfinite(inc), inc, -np.inf)
        log_w = log_w + inc
        ess = effective_sample_size(log_w)
        ess_history.append(ess)
        if lam is not None and ess < ess_threshold * n:
            log_z += logsumexp(log_w) - np.log(n)
            idx = resample(log_w, n, rng=rng)
            state.select(torch.as_tensor(idx))
            previous = previous[idx]
            log_w = np.zeros(n)
            n_resamplings += 1
    log_z += logsumexp(log_w) - np.log(n)  # no resampling after the final stage: x are the particles
    return SMCResult(x, log_w, float(log_z), n_resamplings, ess_history, n_evaluations)
