"""Inference-time control: fix model coordinates and sample the rest, and free-energy profiles
(potentials of mean force) of one or two coordinates without umbrella windows.

Fixing coordinate ``k`` to ``v``: draw ``z_<k ~ q``, set ``z_k = v``, draw ``z_>k ~ q(. | z_<k, v)``.
The free coordinates have the exact density ``g(z_-k) = q(z_<k) q(z_>k | z_<k, v)``. With the
target ``pi(z) = exp(-u(x(z))) |J(z)|`` and ``w = pi(z_-k, v) / g(z_-k)``, ``mean(w)`` estimates
the marginal density of ``z_k`` at ``v`` (times the partition function), so
``F(v) = -ln mean(w) + const`` for every ``v`` from independent runs; the constant cancels in
differences. Several fixed coordinates work the same way (a 2-D grid). Errors: the delta method
on ``mean(w)``, with the Pareto k of each point's weights (``docs/design.md``, section on control).

For a torsion coordinate the marginal density of ``z_k`` is the density of that dihedral angle in
the Boltzmann distribution (torsions add nothing to ``log|J|``; the map from shapes to model
coordinates is a bijection), so ``F`` is the usual potential of mean force of the dihedral, per
radian. For a bond length it is the PMF in the measure ``dr`` (it contains the ``2 ln r`` of the
volume element).
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import logsumexp

from .importance import effective_sample_size, log_importance_weights, pareto_k

__all__ = ["sample_with_fixed", "coordinate_free_energy", "dihedral_profile", "Profile", "periodic_grid"]


def sample_with_fixed(model, n, fixed, proposal_temperature=1.0, seed=None):
    """Draw ``n`` configurations with some model coordinates fixed.

    Parameters
    ----------
    model : ArBG
    n : int
    fixed : dict of int -> float or array_like (n,)
        Model-coordinate index -> value (units of the coordinate: nm or rad), one for all
        configurations or one per configuration.
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
    fixed = {int(k): np.asarray(v, dtype=np.float64) for k, v in fixed.items()}
    for k, v in fixed.items():
        if v.ndim > 1 or (v.ndim == 1 and len(v) != int(n)) or not np.isfinite(v).all():
            raise ValueError(f"the value fixed for coordinate {k} must be a finite number or {int(n)} of them; got shape {v.shape}")
    density = model.density
    generator = torch.Generator(device=model.device).manual_seed(int(seed)) if seed is not None else None
    state = density.start(int(n), proposal_temperature=proposal_temperature)
    while state.position < D:
        if state.position in fixed:
            density.fix(state, torch.as_tensor(fixed[state.position]))
        else:
            density.step(state, generator)
    x, log_volume = model.representation.from_model_coordinates(state.z.cpu())
    return x.numpy(), (state.log_q.cpu() - log_volume).numpy()


def periodic_grid(n):
    """``n`` points ``-pi + (i + 1/2) 2 pi / n`` (rad): the centres of ``n`` equal bins of a circle,
    as :func:`~openmm_arbg.simulation.umbrella.dihedral_grid` places umbrella windows."""
    n = int(n)
    if n < 2:
        raise ValueError(f"a grid needs at least 2 points per dihedral; got {n}")
    return -math.pi + (np.arange(n) + 0.5) * 2 * math.pi / n


def coordinate_free_energy(model, reduced_potential, index, values, n_per_value=1000, proposal_temperature=1.0, seed=0,
                           batch_size=4096, progress=False):
    """Free-energy profile ``F(v)`` (kT, relative to its minimum) of one or more model coordinates.

    Parameters
    ----------
    model : ArBG
    reduced_potential : openmm_arbg.sampling.energies.ReducedPotential
    index : int or sequence of int
        Model coordinate(s) (e.g. torsions; :meth:`ArBG.dihedral_coordinate`).
    values : array_like (m,) or (m, len(index))
        Grid points (nm or rad).
    n_per_value : int
        Proposals per grid point (energy evaluations: ``m * n_per_value``).
    proposal_temperature : float
    seed : int
        Results are reproducible given the seed and ``batch_size``.
    batch_size : int
        Configurations generated at once (grid points are batched together).
    progress : bool
        Show progress (tqdm).

    Returns
    -------
    dict
        ``values`` (m, d) or (m,), ``free_energy`` and ``error`` (kT, delta method), ``log_mean_weight``,
        ``ess`` and ``pareto_k`` per value, ``stereo_rejected`` per value, ``n_evaluations``, and
        ``log_weights`` (m, n_per_value).
    """
    from ..physics import check_target
    from ..utils import progress_bar

    check_target(reduced_potential.system, model.graph)
    indices = [int(index)] if np.ndim(index) == 0 else [int(i) for i in index]
    if len(set(indices)) != len(indices):
        raise ValueError(f"coordinate indices must differ; got {indices}")
    grid = np.asarray(values, dtype=float)
    scalar = grid.ndim == 1 and len(indices) == 1
    grid = grid.reshape(len(grid), -1) if grid.ndim <= 1 else grid
    if grid.ndim != 2 or grid.shape[1] != len(indices) or len(grid) == 0:
        raise ValueError(f"values must have shape (m,) or (m, {len(indices)}) for {len(indices)} coordinate(s); got {np.shape(values)}")
    if not np.isfinite(grid).all():
        raise ValueError("values must be finite")
    n_per_value, batch_size = int(n_per_value), int(batch_size)
    if n_per_value < 2 or batch_size < 1:
        raise ValueError(f"n_per_value must be >= 2 and batch_size >= 1; got {n_per_value}, {batch_size}")
    m = len(grid)
    point = np.repeat(np.arange(m), n_per_value)  # grid point of every proposal
    log_w = np.empty(len(point))
    rejected = np.zeros(m, dtype=int)
    starts = range(0, len(point), batch_size)
    for b, s in enumerate(progress_bar(starts, desc="profile", unit="batch", disable=not progress)):
        p = point[s : s + batch_size]
        x, log_g = sample_with_fixed(
            model, len(p), {k: grid[p, c] for c, k in enumerate(indices)}, proposal_temperature, seed=seed + b
        )
        ok = model.check_stereo(x)
        u = np.full(len(x), np.inf)
        if ok.any():
            u[ok] = reduced_potential(x[ok])
        log_w[s : s + len(p)] = log_importance_weights(u, log_g, ok)
        np.add.at(rejected, p[~ok], 1)
    log_w = log_w.reshape(m, n_per_value)
    log_mean = logsumexp(log_w, axis=1) - np.log(n_per_value)
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.exp(log_w - logsumexp(log_w, axis=1, keepdims=True)) * n_per_value  # w / mean(w), per point
        error = np.std(w, axis=1, ddof=1) / np.sqrt(n_per_value)  # sd of ln mean(w), delta method
    error = np.where(np.isfinite(log_mean), error, np.inf)
    f = -log_mean
    return dict(
        values=grid[:, 0] if scalar else grid,
        free_energy=f - np.min(f),
        error=error,
        log_mean_weight=log_mean,
        ess=np.array([effective_sample_size(r) for r in log_w]),
        pareto_k=np.array([pareto_k(r) for r in log_w]),
        stereo_rejected=rejected,
        n_evaluations=int(m * n_per_value),
        log_weights=log_w,
    )


@dataclass
class Profile:
    """A free-energy profile on a grid of one or two dihedrals, from conditional importance sampling.

    Attributes
    ----------
    names : list of str
        The dihedrals (``phi``, ``psi2``, ``4,6,8,14``, ...).
    coordinates : list of int
        Their model-coordinate indices.
    axes : list of numpy.ndarray
        Grid values per dihedral (rad).
    values : numpy.ndarray (m, d)
        Every grid point (rad), the last dihedral varying fastest.
    free_energy, error : numpy.ndarray (m,)
        ``F = -ln p`` (kT) relative to its minimum, with ``p`` the density of the dihedrals per
        rad^d; and its standard error (delta method; inf where no proposal had weight).
    ess, pareto_k : numpy.ndarray (m,)
        Diagnostics of each point's weights: the error bar is trustworthy for ``pareto_k < 0.7``.
    n_evaluations : int
        Energy evaluations spent.
    temperature : float
        K.
    subdivisions : int
        1: ``F`` is the density at each grid point. ``S > 1``: each grid point stands for its bin
        (width ``2 pi / n_grid`` per dihedral), estimated from ``S`` points per dihedral at the
        centres of equal sub-bins: ``F = -ln`` of the bin-averaged density, the quantity a
        histogram or an umbrella + MBAR bin estimates; ``ess`` and ``pareto_k`` are those of the
        bin's pooled weights, ``stereo_rejected`` the sum over its sub-points.
    """

    names: list
    coordinates: list
    axes: list
    values: np.ndarray
    free_energy: np.ndarray
    error: np.ndarray
    ess: np.ndarray
    pareto_k: np.ndarray
    n_evaluations: int
    temperature: float
    stereo_rejected: np.ndarray = field(default=None)
    subdivisions: int = 1

    @property
    def reliable(self):
        """Bool (m,): points whose weights have a finite error and Pareto k below 0.7."""
        return np.isfinite(self.error) & (self.pareto_k < 0.7)

    def region_probability(self, indicator):
        """Probability of a region of the dihedrals, and its standard error: the grid's rectangle
        rule (periodic, so it converges fast in the grid spacing), with the delta method over the
        independent points.

        Parameters
        ----------
        indicator : callable or array_like of bool (m,)
            Maps grid values (m, d) in rad to bool (m,), or the mask itself.
        """
        inside = np.asarray(indicator(self.values) if callable(indicator) else indicator, dtype=bool)
        if inside.shape != self.free_energy.shape:
            raise ValueError(f"the region mask must have one entry per grid point ({len(self.free_energy)})")
        mass = np.exp(-(self.free_energy - np.min(self.free_energy)))
        total = mass.sum()
        p = float(mass[inside].sum() / total)
        grad = (inside.astype(float) - p) / total  # dP/dm_i
        with np.errstate(invalid="ignore"):
            var = np.nansum((grad * mass * self.error) ** 2)
        return p, float(np.sqrt(var))

    def region_free_energy(self, indicator):
        """``F(region) - F(rest) = -ln(p / (1 - p))`` in kT, with its standard error."""
        from .importance import free_energy_from_probability

        return free_energy_from_probability(*self.region_probability(indicator))

    def table(self):
        """Rows (dict) for a CSV: the grid values in degrees and rad, F, its error and the diagnostics."""
        rows = []
        for i in range(len(self.free_energy)):
            row = {f"{n}_deg": round(float(np.degrees(v)), 6) for n, v in zip(self.names, self.values[i])}
            row.update({f"{n}_rad": float(v) for n, v in zip(self.names, self.values[i])})
            row.update(free_energy_kT=float(self.free_energy[i]), error_kT=float(self.error[i]), ess=float(self.ess[i]),
                       pareto_k=float(self.pareto_k[i]))
            rows.append(row)
        return rows

    def write_csv(self, path):
        """Write :meth:`table` to ``path`` atomically."""
        import csv

        from ..utils import atomic_write

        rows = self.table()
        with atomic_write(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def dihedral_profile(model, reduced_potential, dihedrals, n_grid=36, n_per_point=1000, proposal_temperature=1.0, seed=0,
                     batch_size=4096, progress=False, subdivisions=1):
    """Potential of mean force of one or two dihedrals on a periodic grid, without umbrella windows.

    Each grid point is an independent conditional importance-sampling estimate
    (:func:`coordinate_free_energy`): the dihedrals are fixed in the model's generation and the rest
    of the molecule is drawn from the model's exact conditional, weighted by ``exp(-u)``.

    Parameters
    ----------
    model : ArBG
        Each dihedral must be a model coordinate (train with ``first_torsions``; see
        :meth:`ArBG.dihedral_coordinate`).
    reduced_potential : openmm_arbg.sampling.energies.ReducedPotential
    dihedrals : list of str or (i, j, k, l)
        One or two: ``"phi"``, ``"psi2"``, ``"4,6,8,14"``, ...
    n_grid : int
        Grid points per dihedral, at :func:`periodic_grid` (bin centres).
    n_per_point : int
        Proposals (energy evaluations) per grid point, or per sub-point with ``subdivisions``.
    subdivisions : int
        Points per dihedral inside each grid bin (``Profile.subdivisions``). A point value differs
        from the bin average where F is curved on the bin's scale: by ``ln(sinh(a) / a)``,
        ``a = |F'| h / 2``, on a flank of slope ``F'`` (kT/rad) and bin width ``h``; about 0.3 kT
        on alanine dipeptide's phi flanks in 10-degree bins. Compare with a histogram or an
        umbrella + MBAR profile with ``subdivisions`` of 3 or more (the rule's error falls as
        ``1/S^2``). Energy evaluations: ``(n_grid * subdivisions)**d * n_per_point``.

    Returns
    -------
    Profile

    Examples
    --------
    >>> from openmm_arbg import ArBG  # doctest: +SKIP
    >>> from openmm_arbg.sampling.control import dihedral_profile
    >>> from openmm_arbg.sampling.energies import ReducedPotential
    >>> model = ArBG.from_pretrained("alanine_dipeptide_vacuum_phi_psi_first")  # phi, psi = coordinates 0, 1
    >>> with ReducedPotential(system, temperature=300.0) as u:
    ...     profile = dihedral_profile(model, u, ["phi"], n_grid=36, n_per_point=1000)
    >>> profile.region_free_energy(lambda v: v[:, 0] > 0)  # C7ax against the rest, kT
    """
    dihedrals = list(dihedrals)
    if not 1 <= len(dihedrals) <= 2:
        raise ValueError(f"a profile is over one or two dihedrals; got {len(dihedrals)}")
    if int(subdivisions) != subdivisions or subdivisions < 1:
        raise ValueError(f"subdivisions must be an integer >= 1; got {subdivisions}")
    S, d = int(subdivisions), len(dihedrals)
    coordinates = [model.dihedral_coordinate(x) for x in dihedrals]
    axis = periodic_grid(n_grid)

    def mesh(a):
        return np.stack([g.reshape(-1) for g in np.meshgrid(*([a] * d), indexing="ij")], axis=1)

    fine = periodic_grid(int(n_grid) * S)  # bin b holds the sub-points b*S .. b*S + S - 1
    r = coordinate_free_energy(model, reduced_potential, coordinates, mesh(fine), n_per_point, proposal_temperature, seed,
                               batch_size, progress)
    f, err, ess, k, rejected = _bin_average(r, int(n_grid), S, d)
    names = [x if isinstance(x, str) else ",".join(str(int(a)) for a in x) for x in dihedrals]
    return Profile(names, coordinates, [axis] * d, mesh(axis), f, err, ess, k, r["n_evaluations"],
                   float(reduced_potential.temperature), rejected, S)


def _bin_average(result, n, S, d):
    """Combine the sub-points of :func:`coordinate_free_energy` on a grid of ``n * S`` points per
    dihedral into ``n`` bins per dihedral: ``-ln`` of the mean of ``mean(w)`` over each bin's
    ``S**d`` points, with the delta-method error of independent points. With equal proposals per
    sub-point that mean is the mean of the bin's pooled weights (a stratified estimate of the bin
    integral), so the ESS and Pareto k of a bin are those of its pooled weights."""
    shape = (n, S) * d  # (n, S) or (n, S, n, S): the fine index i*S + s of each dihedral split in two
    axes = tuple(range(1, 2 * d, 2))

    def per_bin(a):  # (m_fine, ...) -> (bins, everything of the bin's sub-points)
        a = np.asarray(a)
        return np.moveaxis(a.reshape(shape + a.shape[1:]), axes, tuple(range(d, 2 * d))).reshape(n**d, -1)

    log_a = per_bin(result["log_mean_weight"])
    e = per_bin(result["error"])
    log_bin = logsumexp(log_a, axis=1) - np.log(S**d)
    with np.errstate(invalid="ignore", over="ignore"):
        share = np.exp(log_a - logsumexp(log_a, axis=1, keepdims=True))  # each sub-point's part of its bin
        error = np.sqrt(np.sum((share * e) ** 2, axis=1))  # sd(ln a_i) = e_i, so sd(ln sum a) = |share * e|
    error = np.where(np.isfinite(log_bin) & np.isfinite(e).all(axis=1), error, np.inf)  # a sub-point without weight: unknown
    f = -log_bin
    if S == 1:  # one point per bin: its own diagnostics
        ess, k = np.asarray(result["ess"]), np.asarray(result["pareto_k"])
    else:
        pooled = per_bin(result["log_weights"])
        ess = np.array([effective_sample_size(row) for row in pooled])
        k = np.array([pareto_k(row) for row in pooled])
    return f - np.min(f), error, ess, k, per_bin(result["stereo_rejected"]).sum(1)
