"""The ArBG paper's evaluation metrics (``docs/design.md``) and plots.

* E-W2: sqrt of the 1-D optimal-transport cost (squared distance) between reduced energies (kT)
  of model samples (after resampling) and reference frames; no clipping.
* T-W2: exact optimal transport between sets of backbone (phi, psi) with the torus ground cost
  ``sum min(|d|, 2 pi - |d|)^2``; sqrt.
* TICA-W2: optimal transport with squared Euclidean cost on the first two TICA components
  (deeptime, lag 100 frames) fitted on the reference trajectory; sqrt.

Optimal transport uses POT (``ot``). Exact transport between n and m points needs an n x m cost
matrix: ``max_points`` subsamples (evenly, without replacement) and the number used is reported.

:func:`evaluate` runs them all for a model against reference frames (what ``arbg evaluate`` and
the demo report), with the warnings of :mod:`openmm_arbg.analysis.diagnostics` and the plots;
:func:`evaluation_table` formats the result as Markdown, beside :func:`reference_floor`: the same
metrics between the reference's two halves, what MD scores against MD at the reference's size.
"""

import os

import numpy as np

__all__ = [
    "evaluate",
    "evaluation_table",
    "reference_floor",
    "energy_w2",
    "torus_w2",
    "tica_w2",
    "structural_w2",
    "dihedral_features",
    "ramachandran_plot",
    "energy_histogram_plot",
]


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
    from .observables import dihedrals

    ang = dihedrals(positions, topology)
    return np.concatenate([np.cos(ang), np.sin(ang)], axis=1)


def _split_runs(frames, lengths):
    """``frames`` cut into its runs of ``lengths`` frames (one run when ``lengths`` is None)."""
    if lengths is None:
        return [frames]
    lengths = [int(n) for n in lengths]
    if any(n < 0 for n in lengths) or sum(lengths) != len(frames):
        raise ValueError(f"run lengths {lengths} do not add up to the {len(frames)} reference frames")
    return [run for run in np.split(frames, np.cumsum(lengths)[:-1]) if len(run)]


def tica_w2(reference_features, sample_features, lag=100, max_points=5000, rng=0, lengths=None):
    """TICA-W2: W2 on the first two TICA components fitted on the reference time series.

    Parameters
    ----------
    reference_features : array_like (n_frames, n_features)
        Features of the reference trajectory, in time order.
    sample_features : array_like (n_samples, n_features)
    lag : int
        TICA lag time in frames.
    lengths : list of int, optional
        Frames of each independent run when the reference is several runs joined in order: TICA
        is fitted on the runs as separate time series (no lag pair spans two runs); runs not
        longer than ``lag`` add no lag pairs but their frames are still compared.

    Returns
    -------
    (float, int)
    """
    import ot
    from deeptime.decomposition import TICA

    ref = np.asarray(reference_features, float)
    runs = [run for run in _split_runs(ref, lengths) if len(run) > lag]
    if not runs and (lengths is None or len(lengths) == 1):
        raise ValueError(f"the reference trajectory ({len(ref)} frames) must be longer than the TICA lag ({lag})")
    if not runs:
        raise ValueError(f"no reference run is longer than the TICA lag ({lag} frames): the longest has {max(lengths)}")
    tica = TICA(lagtime=lag, dim=2).fit(runs if len(runs) > 1 else runs[0]).fetch_model()
    rng = np.random.default_rng(rng)
    a = _subsample(tica.transform(ref), max_points, rng)
    b = _subsample(tica.transform(np.asarray(sample_features, float)), max_points, rng)
    cost = ot.dist(b, a, metric="sqeuclidean")
    value = ot.emd2(np.full(len(b), 1 / len(b)), np.full(len(a), 1 / len(a)), cost, numItermax=10_000_000)
    return float(np.sqrt(max(value, 0.0))), min(len(a), len(b))


def structural_w2(reference_positions, positions, topology, lag=100, max_points=5000, seed=0, lengths=None):
    """T-W2 over every backbone phi and psi, and TICA-W2, of ``positions`` against reference frames.

    Parameters
    ----------
    reference_positions : array_like (n, N, 3) nm
        Reference frames in time order (TICA is fitted on them).
    positions : array_like (m, N, 3) nm
        The samples compared with them (e.g. resampled proposals, or other MD).
    topology : mdtraj, OpenMM or MolecularGraph topology with backbone dihedrals
    lag : int
        TICA lag in reference frames.
    max_points : int
        Points per set for exact optimal transport.
    seed : int
    lengths : list of int, optional
        Frames of each run when the reference is several independent runs joined (see :func:`tica_w2`).

    Returns
    -------
    dict
        ``t_w2`` (rad), ``t_w2_points``, ``tica_w2``, ``tica_w2_points``.
    """
    t, t_points = _backbone_torus_w2(reference_positions, positions, topology, max_points, seed)
    k, k_points = tica_w2(dihedral_features(reference_positions, topology), dihedral_features(positions, topology), lag,
                          max_points, seed, lengths)
    return dict(t_w2=t, t_w2_points=t_points, tica_w2=k, tica_w2_points=k_points)


def _backbone_torus_w2(reference_positions, positions, topology, max_points, seed):
    """T-W2 over every backbone phi and psi of ``positions`` against reference frames: (rad, points)."""
    from .observables import backbone_dihedrals

    phi_r, psi_r = backbone_dihedrals(reference_positions, topology)
    phi_s, psi_s = backbone_dihedrals(positions, topology)
    return torus_w2(np.radians(np.concatenate([phi_s, psi_s], 1)), np.radians(np.concatenate([phi_r, psi_r], 1)), max_points,
                    seed)


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
    """Overlaid normalised histograms of energies: ``series`` is a list of (label, values, weights).

    The axis spans the first series (the reference) from its 0.5th to 99.5th percentile, widened
    by its width on each side: a few proposals with clashes (energies of 10^8 kT) do not squeeze
    every histogram into one bin. How many values of each series lie beyond it is in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = np.asarray(series[0][1], dtype=float)
    first = first[np.isfinite(first)]
    if not len(first):
        first = np.concatenate([np.asarray(v, dtype=float)[np.isfinite(v)] for _, v, _ in series])
    lo, hi = np.percentile(first, [0.5, 99.5])
    lo, hi = lo - (hi - lo), hi + (hi - lo)
    bins = np.linspace(lo, hi + 1e-9, 80)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values, w in series:
        values = np.asarray(values)
        ok = np.isfinite(values)
        outside = int(np.sum(ok & ((values < lo) | (values > hi))))
        label = f"{label} ({outside} of {len(values)} off the axis)" if outside else label
        ax.hist(values[ok], bins=bins, weights=None if w is None else np.asarray(w)[ok], density=True, histtype="step", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate(model, reference_positions, reduced_potential, n_proposals, proposal_temperature=1.0, lag=100, max_points=5000,
             structural=True, seed=0, output_dir=None, reference_label="reference MD", progress=False, floor=True,
             reference_lengths=None, result=None):
    """The ArBG paper's metrics of a model against reference frames, with warnings and plots.

    Draws ``n_proposals`` importance-sampling proposals, resamples them to the target, and
    compares them with the reference: ESS, E-W2 (reduced energies), and, with ``structural``,
    T-W2 (backbone phi/psi on the torus) and TICA-W2 (TICA of the reference's dihedral features).

    Parameters
    ----------
    model : openmm_arbg.ArBG
    reference_positions : array_like (n, N, 3) nm
        Reference frames of the target, in time order (e.g. long MD; TICA needs the time order).
    reduced_potential : openmm_arbg.sampling.energies.ReducedPotential
        The target.
    n_proposals : int
    proposal_temperature : float
    lag : int
        TICA lag in reference frames.
    max_points : int
        Points per set for exact optimal transport (T-W2, TICA-W2).
    structural : bool
        Compute T-W2 and TICA-W2 (skipped, with a note, for a molecule without backbone dihedrals).
    seed : int
    output_dir : str, optional
        Write ``ramachandran.png`` and ``energies.png`` there.
    reference_label : str
        Name of the reference in plots.
    floor : bool
        Also compute the metrics between the reference's first and second halves
        (:func:`reference_floor`): what independent MD scores at this reference size, below which
        the reference cannot tell a model from exact samples.
    reference_lengths : list of int, optional
        Frames of each run when the reference is several independent runs joined in order (for
        example several MD runs with other seeds): TICA treats them as separate time series.
    result : ImportanceSamplingResult, optional
        Proposals already drawn and weighed against this target (for example
        :func:`~openmm_arbg.sampling.streaming.load_weighed_proposals` of an ``arbg sample
        --output`` run): evaluated instead of drawing ``n_proposals`` new ones (``n_proposals``
        and ``proposal_temperature`` are then not used).

    Returns
    -------
    dict
        ``n_proposals``, ``n_reference``, ``ess``, ``ess_fraction``, ``pareto_k``,
        ``wrong_handed_fraction``, ``e_w2`` (kT), ``t_w2`` (rad) and ``t_w2_points``, ``tica_w2``
        and ``tica_w2_points`` (``nan``/0 when not computed), ``lag``, ``warnings`` (list of str),
        ``plots`` (list of paths), and the :class:`~openmm_arbg.sampling.importance.ImportanceSamplingResult`
        as ``result``, the resampled indices as ``resampled`` and the reference's reduced energies as
        ``reference_reduced_potentials``; with ``floor``, ``floor`` (the dict of
        :func:`reference_floor`).
    """
    from ..arbg import as_positions_nm
    from ..sampling.importance import importance_sample, resample
    from .diagnostics import diagnostics_of, warning_lines
    from .observables import backbone_dihedrals

    ref = as_positions_nm(reference_positions, model.n_atoms, model.graph, "reference positions")
    if result is None:
        result = importance_sample(model, reduced_potential, n_proposals, proposal_temperature=proposal_temperature, seed=seed,
                                   progress=progress)
    n_proposals = result.n
    picks = resample(result.log_weights, n_proposals, rng=seed)
    u_ref = reduced_potential(ref)
    x_rs, u_rs = result.positions[picks], result.reduced_potentials[picks]
    top = model.topology
    out = dict(diagnostics_of(result), n_proposals=int(n_proposals), n_reference=len(ref), ess=result.ess, lag=int(lag))
    out["e_w2"] = energy_w2(u_rs, u_ref[np.isfinite(u_ref)])
    out.update(t_w2=float("nan"), t_w2_points=0, tica_w2=float("nan"), tica_w2_points=0)
    warnings = warning_lines(result)
    if (~np.isfinite(u_ref)).any():
        warnings.append(f"{int((~np.isfinite(u_ref)).sum())} reference frames have no finite energy (left out of E-W2)")
    phi_r, psi_r = backbone_dihedrals(ref, top)
    has_backbone = phi_r.shape[1] > 0 and psi_r.shape[1] > 0
    if structural and not has_backbone:
        warnings.append("the molecule has no backbone phi and psi: T-W2 and TICA-W2 are not computed")
    elif structural:
        out.update(structural_w2(ref, x_rs, top, lag, max_points, seed, reference_lengths))
    if floor:
        out["floor"] = reference_floor(ref, u_ref, top, lag, max_points, seed, structural=structural and has_backbone,
                                       lengths=reference_lengths)
        warnings.extend(_floor_notes(out))
    out["plots"] = []
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        if has_backbone:
            phi_p, psi_p = backbone_dihedrals(result.positions, top)
            finite = result.log_weights[np.isfinite(result.log_weights)]
            w = np.exp(result.log_weights - (finite.max() if len(finite) else 0.0))
            out["plots"].append(ramachandran_plot(
                [(reference_label, phi_r[:, 0], psi_r[:, 0], None), ("proposals", phi_p[:, 0], psi_p[:, 0], None),
                 ("reweighted", phi_p[:, 0], psi_p[:, 0], w)],
                os.path.join(output_dir, "ramachandran.png"),
            ))
        out["plots"].append(energy_histogram_plot(
            [(reference_label, u_ref, None), ("proposals", result.reduced_potentials, None), ("resampled", u_rs, None)],
            os.path.join(output_dir, "energies.png"),
        ))
    out.update(warnings=warnings, result=result, resampled=picks, reference_reduced_potentials=u_ref)
    return out


def reference_floor(reference_positions, reference_reduced_potentials, topology, lag=100, max_points=5000, seed=0,
                    structural=True, lengths=None):
    """E-W2, T-W2 and TICA-W2 between the first and the second half of a reference trajectory.

    Each half is independent MD of half the reference's length (up to the correlation across
    the midpoint), so these are what MD scores against MD at this size: a model whose metrics
    against the whole reference are at or below them is as close as the reference can show,
    and checking smaller values (such as the ArBG paper's) needs a longer reference. (For
    independent frames and W2 falling as ``n**-0.5``, exact samples score about half the
    halves' value against the whole reference; correlated frames make both larger.)

    Parameters
    ----------
    reference_positions : array_like (n, N, 3) nm
        In time order.
    reference_reduced_potentials : array_like (n,)
        Reduced energies (kT) of the frames; non-finite ones are left out of E-W2.
    topology : mdtraj, OpenMM or MolecularGraph topology
    lag : int
        TICA lag in frames (TICA-W2 is ``nan`` when a half is not longer than it).
    max_points : int
    seed : int
    structural : bool
        Compute T-W2 and TICA-W2 (the molecule needs backbone phi and psi).
    lengths : list of int, optional
        Frames of each run when the reference is several independent runs joined in order; the
        halves are still the first and the second half of the frames, and a run cut by the
        midpoint is two time series for TICA.

    Returns
    -------
    dict
        ``n_half`` (frames per half), ``e_w2`` (kT), ``t_w2`` (rad), ``tica_w2`` (``nan`` where
        not computed).
    """
    ref = np.asarray(reference_positions)
    u = np.asarray(reference_reduced_potentials, float)
    h = len(ref) // 2
    out = dict(n_half=h, e_w2=float("nan"), t_w2=float("nan"), tica_w2=float("nan"))
    if h < 2:
        return out
    ua, ub = u[:h], u[h:2 * h]
    if np.isfinite(ua).any() and np.isfinite(ub).any():
        out["e_w2"] = energy_w2(ua[np.isfinite(ua)], ub[np.isfinite(ub)])
    if structural:
        a, b = ref[:h], ref[h:2 * h]
        la = None
        if lengths is not None:
            ends = np.cumsum([int(n) for n in lengths])
            la = np.diff(np.concatenate([[0], np.minimum(ends, h)])).tolist()  # the runs' frames in the first half
        longest = h if lengths is None else max(la)
        if longest > lag:  # TICA needs a (run of the first) half longer than its lag
            w2 = structural_w2(a, b, topology, lag, max_points, seed, la)
            out.update(t_w2=w2["t_w2"], tica_w2=w2["tica_w2"])
        else:
            out["t_w2"] = _backbone_torus_w2(a, b, topology, max_points, seed)[0]
    return out


def _floor_notes(metrics):
    """A note for each metric that the reference's halves match or beat (the reference too short
    to measure it)."""
    floor = metrics["floor"]
    at = [name for key, name in (("e_w2", "E-W2"), ("t_w2", "T-W2"), ("tica_w2", "TICA-W2"))
          if np.isfinite(floor[key]) and np.isfinite(metrics[key]) and metrics[key] <= floor[key]]
    if not at:
        return []
    return [f"{', '.join(at)} at or below what the reference's two halves ({floor['n_half']} frames each) score against each "
            "other: this reference cannot tell the model from exact samples there; a longer reference measures smaller values"]


def evaluation_table(metrics):
    """The metrics of :func:`evaluate` as a Markdown table (str)."""
    floor = metrics.get("floor")

    def half(key):
        return f"{floor[key]:.3f}" if floor is not None and np.isfinite(floor[key]) else ""

    rows = [
        ("proposals (energy evaluations)", f"{metrics['n_proposals']}", ""),
        ("ESS/N", f"{100 * metrics['ess_fraction']:.2f} %", ""),
        ("Pareto k", f"{metrics['pareto_k']:.2f}", ""),
        ("E-W2 (kT)", f"{metrics['e_w2']:.3f}", half("e_w2")),
    ]
    if metrics.get("t_w2_points"):
        rows.append(("T-W2 (rad)", f"{metrics['t_w2']:.3f} ({metrics['t_w2_points']} points)", half("t_w2")))
    if metrics.get("tica_w2_points"):
        rows.append(("TICA-W2", f"{metrics['tica_w2']:.3f} ({metrics['tica_w2_points']} points, lag {metrics['lag']} frames)",
                     half("tica_w2")))
    rows.append(("reference frames", f"{metrics['n_reference']}", f"{floor['n_half']} per half" if floor is not None else ""))
    if floor is None:
        return "| metric | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v, _ in rows) + "\n"
    return ("| metric | value | reference halves against each other |\n| --- | --- | --- |\n"
            + "\n".join(f"| {k} | {v} | {f} |" for k, v, f in rows) + "\n\n"
            "(The last column is what independent MD of half the reference's length scores against MD: "
            "values at or below it are as close as this reference can show; the ArBG paper's need longer references.)\n")
