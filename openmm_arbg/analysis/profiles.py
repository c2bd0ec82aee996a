"""Free-energy profiles: comparison of two profiles on the same grid, and plots (1-D with error
bands, 2-D maps).

Two profiles ``F_a``, ``F_b`` (kT, each known up to a constant) are compared after the constant
that best aligns them (weighted by their combined variances) is removed; ``z = (F_a - F_b - c) /
sqrt(e_a^2 + e_b^2)`` at every point where both are defined.
"""

import numpy as np

__all__ = ["compare_profiles", "profile_plot"]


def compare_profiles(free_energy, error, reference, reference_error, max_reference_error=np.inf):
    """Agreement of a profile with a reference on the same grid.

    Parameters
    ----------
    free_energy, error : array_like (m,), kT
    reference, reference_error : array_like (m,), kT
    max_reference_error : float, kT
        Points where the reference's error is larger count as undefined there.

    Returns
    -------
    dict
        ``defined`` (bool (m,)), ``offset`` (kT, added to the reference), ``z`` (m,; NaN where
        undefined), ``max_abs_z``, ``chi2_per_point``, ``within_2_sigma`` (fraction),
        ``n_defined``.
    """
    f, e = np.asarray(free_energy, float), np.asarray(error, float)
    r, er = np.asarray(reference, float), np.asarray(reference_error, float)
    if not f.shape == e.shape == r.shape == er.shape:
        raise ValueError(f"profiles must share one grid; got shapes {f.shape}, {e.shape}, {r.shape}, {er.shape}")
    defined = np.isfinite(f) & np.isfinite(e) & np.isfinite(r) & np.isfinite(er) & (er <= max_reference_error)
    if not defined.any():
        raise ValueError("the profiles share no point where both are defined")
    var = e**2 + er**2
    offset = float(np.average((f - r)[defined], weights=1.0 / np.maximum(var[defined], 1e-12)))
    z = np.full(f.shape, np.nan)
    z[defined] = (f[defined] - r[defined] - offset) / np.sqrt(np.maximum(var[defined], 1e-12))
    return dict(
        defined=defined,
        offset=offset,
        z=z,
        max_abs_z=float(np.nanmax(np.abs(z))),
        chi2_per_point=float(np.nanmean(z**2)),
        within_2_sigma=float(np.mean(np.abs(z[defined]) < 2)),
        n_defined=int(defined.sum()),
    )


def profile_plot(profile, path, reference=None, reference_label="reference", title=None):
    """Plot a :class:`~openmm_arbg.sampling.control.Profile` to ``path`` (PNG, written atomically).

    One dihedral: F (kT) against the angle (degrees) with a 1-sigma band (points whose weights
    have Pareto k >= 0.7 marked: their error bars are too small), and optionally a
    reference ``(free_energy, error)`` on the same grid as points with error bars, shifted by the
    aligning constant of :func:`compare_profiles`. Two dihedrals: a map of F (and of the reference
    beside it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_write

    names = profile.names
    if len(names) == 1:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        deg = np.degrees(profile.values[:, 0])
        f, e = profile.free_energy, np.where(np.isfinite(profile.error), profile.error, np.nan)
        ax.plot(deg, f, "-", color="C0", label=f"ArBG conditional IS ({profile.n_evaluations:,} energies)")
        ax.fill_between(deg, f - e, f + e, color="C0", alpha=0.3, lw=0)
        bad = ~profile.reliable
        if bad.any():
            ax.plot(deg[bad], f[bad], "x", color="C3", label="Pareto k >= 0.7: error bar too small")
        if reference is not None:
            r, er = (np.asarray(a, float) for a in reference)
            shift = compare_profiles(f, profile.error, r, er)["offset"]
            ax.errorbar(deg, r + shift, yerr=er, fmt="o", ms=3, color="C1", label=reference_label)
        ax.set_xlabel(f"{names[0]} (degrees)")
        ax.set_ylabel("free energy (kT)")
        ax.set_xlim(-180, 180)
        ax.legend(frameon=False)
    else:
        n = len(profile.axes[0])
        panels = [("ArBG conditional IS", profile.free_energy)]
        if reference is not None:
            panels.append((reference_label, np.asarray(reference[0], float)))
        fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.2), squeeze=False)
        extent = [-180, 180, -180, 180]
        vmax = np.nanmax(np.where(np.isfinite(profile.free_energy), profile.free_energy, np.nan))
        for ax, (label, f) in zip(axes[0], panels):
            grid = np.where(np.isfinite(f), f, np.nan).reshape(n, n).T  # rows: second dihedral
            im = ax.imshow(grid, origin="lower", extent=extent, cmap="viridis", vmin=0, vmax=vmax, aspect="equal")
            ax.set_xlabel(f"{names[0]} (degrees)")
            ax.set_ylabel(f"{names[1]} (degrees)")
            ax.set_title(label)
        fig.colorbar(im, ax=list(axes[0]), label="free energy (kT)")
    if title:
        fig.suptitle(title)
    with atomic_write(path, mode=None) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")  # no axis label cut off
    plt.close(fig)
    return path
