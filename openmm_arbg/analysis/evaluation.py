"""The ArBG paper's evaluation metrics (``docs/design.md``) and plots.

* E-W2: sqrt of the 1-D optimal-transport cost (squared distance) between reduced energies (kT)
  of model samples (after resampling) and reference frames; no clipping.
* T-W2: exact optimal transport between sets of backbone (phi, psi) with the torus ground cost
  ``sum min(|d|, 2 pi - |d|)^2``; sqrt.
* TICA-W2: optimal transport with squared Euclidean cost on the first two TICA components
  (deeptime, lag 100 frames) fitted on the reference trajectory; sqrt.

Optimal transport uses POT (``ot``). Exact transport between n and m points needs an n x m cost
matrix: ``max_points`` subsamples (evenly, without replacement) and the number used is reported.
"""

import numpy as np

__all__ = ["energy_w2", "torus_w2", "tica_w2", "dihedral_features", "ramachandran_plot", "energy_histogram_plot"]


def _subsample(x, max_points, rng):
    x = np.asarray(x)
    if max_points is None or len(x) <= max_points:
        return x
    return x[np.sort(rng.choice(len(x), max_points, replace=False))]


def energy_w2(u_samples, u_reference):
    """E-W2 (kT): sqrt of the 1-D W2^2 between two sets of reduced energies. Non-finite energies
    are an error (a resampled population has none)."""
    import ot

    a, b = np.asarray(u_samples, float), np.asarray(u_reference, float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("E-W2 needs finite energies; resample first (weight-zero samples are never drawn)")
    return float(np.sqrt(ot.emd2_1d(a, b, metric="sqeuclidean")))


def torus_w2(angles_a, angles_b, max_points=5000, rng=0):
    """T-W2 (rad): exact OT between sets of angles (n, d) in rad with the torus cost.

    Returns
    -------
    (float, int)
        The distance and the number of points per set used.
    """
    import ot

    rng = np.random.default_rng(rng)
    a = _subsample(np.asarray(angles_a, float).reshape(len(angles_a), -1), max_points, rng)
    b = _subsample(np.asarray(angles_b, float).reshape(len(angles_b), -1), max_points, rng)
    d = np.abs(a[:, None, :] - b[None, :, :]) % (2 * np.pi)
    cost = (np.minimum(d, 2 * np.pi - d) ** 2).sum(-1)
    value = ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost, numItermax=10_000_000)
    return float(np.sqrt(max(value, 0.0))), min(len(a), len(b))


def dihedral_features(positions, topology):
    """cos and sin of every backbone phi and psi: (n, 4 * n_dihedral_pairs)."""
    from .observables import backbone_dihedrals

    phi, psi = backbone_dihedrals(positions, topology)
    ang = np.radians(np.concatenate([phi, psi], axis=1))
    return np.concatenate([np.cos(ang), np.sin(ang)], axis=1)


def tica_w2(reference_features, sample_features, lag=100, max_points=5000, rng=0):
    """TICA-W2: W2 on the first two TICA components fitted on the reference time series.

    Parameters
    ----------
    reference_features : array_like (n_frames, n_features)
        Features of the reference trajectory, in time order.
    sample_features : array_like (n_samples, n_features)
    lag : int
        TICA lag time in frames.

    Returns
    -------
    (float, int)
    """
    import ot
    from deeptime.decomposition import TICA

    ref = np.asarray(reference_features, float)
    if len(ref) <= lag:
        raise ValueError(f"the reference trajectory ({len(ref)} frames) must be longer than the TICA lag ({lag})")
    tica = TICA(lagtime=lag, dim=2).fit(ref).fetch_model()
    rng = np.random.default_rng(rng)
    a = _subsample(tica.transform(ref), max_points, rng)
    b = _subsample(tica.transform(np.asarray(sample_features, float)), max_points, rng)
    cost = ot.dist(b, a, metric="sqeuclidean")
    value = ot.emd2(np.full(len(b), 1 / len(b)), np.full(len(a), 1 / len(a)), cost, numItermax=10_000_000)
    return float(np.sqrt(max(value, 0.0))), min(len(a), len(b))


def ramachandran_plot(panels, path, title=None):
    """Side-by-side (phi, psi) histograms.

    Parameters
    ----------
    panels : list of (label, phi_deg, psi_deg, weights or None)
    path : str
        PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), squeeze=False)
    bins = np.linspace(-180, 180, 73)
    for ax, (label, phi, psi, w) in zip(axes[0], panels):
        h, _, _ = np.histogram2d(np.ravel(phi), np.ravel(psi), bins=[bins, bins], weights=w, density=True)
        with np.errstate(divide="ignore"):
            free = -np.log(h.T)
        free -= free[np.isfinite(free)].min()
        mesh = ax.pcolormesh(bins, bins, np.ma.masked_invalid(free), cmap="viridis", shading="flat", vmin=0, vmax=8)
        ax.set_title(label)
        ax.set_xlabel("phi (deg)")
        ax.set_ylabel("psi (deg)")
        ax.set_aspect("equal")
    fig.colorbar(mesh, ax=list(axes[0]), label="-ln p (kT), capped at 8")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def energy_histogram_plot(series, path, xlabel="reduced energy (kT)"):
    """Overlaid normalised histograms of energies: ``series`` is a list of (label, values, weights)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = np.concatenate([np.asarray(v)[np.isfinite(v)] for _, v, _ in series])
    lo, hi = np.percentile(finite, [0.5, 99.5])
    bins = np.linspace(lo, hi + 1e-9, 80)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values, w in series:
        values = np.asarray(values)
        ok = np.isfinite(values)
        ax.hist(values[ok], bins=bins, weights=None if w is None else np.asarray(w)[ok], density=True, histtype="step", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
