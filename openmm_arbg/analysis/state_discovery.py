"""Conformational states found automatically from MD: TICA on the backbone dihedrals, k-means
microstates, and PCCA+ metastable sets of their Markov model (deeptime).

A user with a new peptide rarely knows which dihedral ranges make its states.
:func:`discover_states` finds them in the user's own trajectories:

1. features: cos and sin of every backbone phi and psi (dimensionless);
2. TICA (``lag`` frames, kinetic-map scaling) keeps the slow directions;
3. k-means cuts TICA space into ``n_microstates`` microstates;
4. ``method="pcca"`` (default): a reversible maximum-likelihood Markov model of the microstates at
   the same lag and PCCA+ lump them into ``n_states`` metastable sets (each microstate goes to the
   set of its largest membership; microstates outside the model's connected set go with their
   nearest connected neighbour). ``method="kmeans"``: the ``n_states`` k-means clusters of TICA
   space themselves (geometric, not kinetic: a rare basin may share a cluster with a common one).

The result, :class:`DiscoveredStates`, is a fixed assignment rule (an affine TICA projection and
the microstate centres): any frames or proposals, not only the fitting MD, get a state, so one set
of states serves importance sampling, chains and MBAR alike. It is saved as JSON and loaded again
(:meth:`DiscoveredStates.save`, :meth:`DiscoveredStates.load`). A basin the MD never visited
cannot be discovered from it: discovery names what the MD saw, and the estimators then weigh it.

Example
-------
>>> import numpy as np
>>> from openmm_arbg.analysis.state_discovery import DiscoveredStates
>>> states = DiscoveredStates(n_atoms=4, dihedral_names=["phi"], dihedral_atoms=[[0, 1, 2, 3]],
...                           offset=[0.0], projection=[[1.0], [0.0]], centres=[[-1.0], [1.0]],
...                           microstate_states=[0, 1], names=["S1", "S2"])  # TICA coordinate: cos(phi)
>>> x = np.array([[[1, 0, 0], [0, 0, 0], [0, 1, 0], [s, 1, 1]] for s in (1.0, -1.0)])  # |phi| 45 and 135 deg
>>> states.assign(x).tolist()
[1, 0]
"""

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..utils import write_json_atomic

__all__ = ["DiscoveredStates", "discover_states", "backbone_features"]

_FORMAT = "openmm-arbg discovered states"
_VERSION = 1


def backbone_features(positions, dihedral_atoms):
    """cos and sin of the dihedrals ``dihedral_atoms`` (m, 4): array (n, 2 m), all cosines first."""
    from .observables import dihedrals

    angles = dihedrals(positions, np.asarray(dihedral_atoms, dtype=int).reshape(-1, 4))
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1)


@dataclass
class DiscoveredStates:
    """States found by :func:`discover_states`: a rule that gives every frame a state.

    Parameters
    ----------
    n_atoms : int
        Atoms of the molecule the states belong to.
    dihedral_names : list of str
        The backbone dihedrals read (``phi2``, ``psi2``, ...).
    dihedral_atoms : list of list of int
        Their atom quadruples (0-based).
    offset : list of float (d,)
        TICA projection of the zero feature vector.
    projection : list of list of float (2 m, d)
        TICA projection: ``tica = features @ projection + offset``.
    centres : list of list of float (n_microstates, d)
        Microstate centres in TICA space.
    microstate_states : list of int (n_microstates,)
        State index of each microstate.
    names : list of str
        State names, most populated (in the fitting frames) first.
    descriptions : list of str
        Circular mean of each dihedral in each state, degrees (what the state is).
    fit_populations : list of float
        Fraction of the fitting frames in each state (unweighted: MD frames count as they come).
    lag : int
        TICA and Markov-model lag, frames.
    method : str
        ``"pcca"`` or ``"kmeans"``.
    outside_points : list of list of float (n, d), optional
        TICA coordinates of fitting frames (a subsample) that mark where the MD went.
    outside_radius : float
        A frame farther than this from every one of ``outside_points`` (TICA distance) lies where
        the MD never went: :meth:`assign` gives it -1 and :meth:`states` counts it in the extra
        state :attr:`OUTSIDE` (no ``outside_points``: no such rule).
    """

    OUTSIDE = "outside"

    n_atoms: int
    dihedral_names: list
    dihedral_atoms: list
    offset: list
    projection: list
    centres: list
    microstate_states: list
    names: list
    descriptions: list = field(default_factory=list)
    fit_populations: list = field(default_factory=list)
    lag: int = 0
    method: str = "pcca"
    outside_points: list = field(default_factory=list)
    outside_radius: float = 0.0

    def __post_init__(self):
        m, d = len(self.dihedral_atoms), len(self.offset)
        if np.shape(self.projection) != (2 * m, d) or d < 1:
            raise ValueError(f"projection must have shape ({2 * m}, {d}) for {m} dihedrals; got {np.shape(self.projection)}")
        if np.ndim(self.centres) != 2 or np.shape(self.centres)[1] != d:
            raise ValueError(f"centres must have shape (n_microstates, {d}); got {np.shape(self.centres)}")
        if len(self.microstate_states) != len(self.centres):
            raise ValueError("microstate_states needs one state per microstate centre")
        if not all(0 <= int(s) < len(self.names) for s in self.microstate_states):
            raise ValueError(f"microstate_states must lie in 0..{len(self.names) - 1}")
        if len(self.dihedral_names) != m:
            raise ValueError("dihedral_names needs one name per dihedral")
        if len(self.outside_points) and np.shape(self.outside_points)[1:] != (d,):
            raise ValueError(f"outside_points must have shape (n, {d}); got {np.shape(self.outside_points)}")
        if self.OUTSIDE in self.names:
            raise ValueError(f"{self.OUTSIDE!r} is reserved for frames outside every state; name the states otherwise")

    @property
    def n_states(self):
        return len(self.names)

    def tica(self, positions):
        """TICA coordinates (n, d) of frames (n, N, 3) nm."""
        x = np.asarray(positions, dtype=np.float64)
        x = x.reshape((-1,) + x.shape[-2:])
        if x.shape[1] != self.n_atoms:
            raise ValueError(f"these states belong to a molecule of {self.n_atoms} atoms; the frames have {x.shape[1]}")
        return backbone_features(x, self.dihedral_atoms) @ np.asarray(self.projection) + np.asarray(self.offset)

    def assign(self, positions):
        """State index (n,) of each frame (n, N, 3) nm: :meth:`assign_tica` of its TICA coordinates."""
        return self.assign_tica(self.tica(positions))

    def assign_tica(self, y):
        """State index (n,) of TICA coordinates (n, d): the state of the nearest microstate centre,
        or -1 where no fitting frame lies within ``outside_radius``."""
        from scipy.spatial import cKDTree

        y = np.asarray(y, dtype=np.float64)
        labels = np.asarray(self.microstate_states, dtype=int)[cKDTree(np.asarray(self.centres)).query(y)[1]]
        if len(self.outside_points):
            labels[cKDTree(np.asarray(self.outside_points)).query(y)[0] > self.outside_radius] = -1
        return labels

    def states(self):
        """name -> callable ``f(positions) -> bool (n,)``, as :func:`~openmm_arbg.analysis.states.state_populations`
        takes; with ``outside_points``, also :attr:`OUTSIDE` (frames where the MD never went). The
        callables share one assignment of the last positions array they were given (the same array
        object: :func:`~openmm_arbg.analysis.states.state_indicators` passes one to all), so the
        frames are projected and assigned once, not once per state."""
        last = {}

        def labels(x):
            if last.get("x") is not x:
                last.update(x=x, labels=self.assign(x))
            return last["labels"]

        out = {name: (lambda x, k=k: labels(x) == k) for k, name in enumerate(self.names)}
        if len(self.outside_points):
            out[self.OUTSIDE] = lambda x: labels(x) == -1
        return out

    def check_topology(self, topology):
        """Raise ``ValueError`` unless ``topology`` has these atoms and these backbone dihedrals."""
        from .observables import _as_mdtraj, named_dihedrals

        top = _as_mdtraj(topology)
        if top.n_atoms != self.n_atoms:
            raise ValueError(f"these states belong to a molecule of {self.n_atoms} atoms; the topology has {top.n_atoms}")
        named = named_dihedrals(top)
        for name, atoms in zip(self.dihedral_names, self.dihedral_atoms):
            if named.get(name) != [int(a) for a in atoms]:
                raise ValueError(f"these states read dihedral {name} on atoms {list(atoms)}; this topology's {name} is "
                                 f"{named.get(name, 'missing')}: they were found for another molecule")

    def save(self, path):
        """Write the states as JSON (no pickle)."""
        write_json_atomic(path, dict(format=_FORMAT, version=_VERSION, **asdict(self)))

    @classmethod
    def load(cls, path):
        """Read states written by :meth:`save`."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"states file {path} does not exist (arbg free-energy --discover N --save-states FILE writes one)")
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a states file written by arbg free-energy --save-states ({exc})") from None
        if not isinstance(data, dict) or data.pop("format", None) != _FORMAT:
            raise ValueError(f"{path} is not a states file written by arbg free-energy --save-states")
        if data.pop("version", None) != _VERSION:
            raise ValueError(f"{path}: states file version not understood (this package reads version {_VERSION})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"{path}: malformed states file ({exc})") from None

    def summary(self):
        """One line per state: name, fitting-frame fraction, mean dihedrals."""
        lines = [f"{self.n_states} states found by {'TICA + k-means + PCCA+' if self.method == 'pcca' else 'TICA + k-means'} "
                 f"(lag {self.lag} frames) on {', '.join(self.dihedral_names)}:"]
        for k, name in enumerate(self.names):
            frac = f"{100 * self.fit_populations[k]:.1f} % of the MD frames" if self.fit_populations else ""
            desc = self.descriptions[k] if self.descriptions else ""
            lines.append(f"  {name}: {desc} ({frac})" if frac else f"  {name}: {desc}")
        if len(self.outside_points):
            lines.append(f"  {self.OUTSIDE}: where the MD never went (farther in TICA space from every MD frame than "
                         f"{self.outside_radius:.3g}, 1.5x the 99.9th percentile of the MD frames' nearest-neighbour distances)")
        return "\n".join(lines)


def _circular_mean_deg(angles):
    return float(np.degrees(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())))


def discover_states(trajectories, topology, n_states=3, lag=None, n_microstates=None, method="pcca", dim=None, seed=0,
                    max_fit_frames=50000, outside_margin=1.5):
    """Find ``n_states`` conformational states in MD trajectories (see the module docstring).

    Parameters
    ----------
    trajectories : array_like (n, N, 3) nm, or list of them
        MD frames in time order; several independent runs as a list (no transition counted between them).
    topology : mdtraj.Topology, openmm.app.Topology or MolecularGraph
        A molecule with at least one backbone phi or psi.
    n_states : int
        Number of states (at least 2).
    lag : int, optional
        TICA and Markov-model lag in frames (default: 100, or a tenth of the longest trajectory if shorter).
    n_microstates : int, optional
        k-means clusters of TICA space before PCCA+ (default ``max(20, 10 n_states)``, at most a
        tenth of the frames); ignored for ``method="kmeans"``.
    method : {"pcca", "kmeans"}
    dim : int, optional
        TICA dimensions kept (default: those explaining 95 % of the kinetic variance, at least 2
        where the features allow).
    seed : int
        k-means seed.
    max_fit_frames : int
        Frames (evenly strided) k-means is fitted on; every frame is counted for the Markov model.
    outside_margin : float
        A frame is :attr:`DiscoveredStates.OUTSIDE` when it is farther in TICA space from every one
        of 2 000 fitting frames than this many times the 99.9th percentile of those frames' own
        nearest-neighbour distances (1.5: about 0.04 % of new frames of alanine dipeptide's MD are
        outside, and 99 % of proposals with phi > 0, a basin that MD never visited; 0: no outside state).

    Returns
    -------
    DiscoveredStates
    """
    from deeptime.clustering import KMeans
    from deeptime.decomposition import TICA

    from .observables import named_dihedrals

    if method not in ("pcca", "kmeans"):
        raise ValueError(f"method must be 'pcca' or 'kmeans'; got {method!r}")
    n_states = int(n_states)
    if n_states < 2:
        raise ValueError(f"n_states must be at least 2; got {n_states}")
    named = {k: v for k, v in named_dihedrals(topology).items() if k[-1].isdigit()}
    if not named:
        raise ValueError("the molecule has no backbone phi or psi dihedral to find states on; define states with --state "
                         "expressions (distances d(i, j)) or a Python callable instead")
    names = sorted(named, key=lambda k: (int(k[3:]), k[:3] != "phi"))
    atoms = [named[k] for k in names]
    trajs = [np.asarray(trajectories, dtype=np.float64)] if np.ndim(trajectories) == 3 else [np.asarray(t, dtype=np.float64) for t in trajectories]
    if not trajs or any(t.ndim != 3 for t in trajs):
        raise ValueError("trajectories must be frames (n, N, 3) in nm, or a list of such arrays")
    n_atoms = trajs[0].shape[1]
    feats = [backbone_features(t, atoms) for t in trajs]
    longest = max(len(f) for f in feats)
    lag = int(lag) if lag is not None else max(1, min(100, longest // 10))
    if lag < 1 or longest <= lag:
        raise ValueError(f"the longest trajectory has {longest} frames, not more than the lag ({lag} frames): give a "
                         "shorter lag or more MD")
    usable = [f for f in feats if len(f) > lag]
    tica = TICA(lagtime=lag, var_cutoff=None if dim else 0.95, dim=dim).fit(usable).fetch_model()
    offset = tica.transform(np.zeros((1, feats[0].shape[1])))[0]
    projection = tica.transform(np.eye(feats[0].shape[1])) - offset
    if projection.shape[1] < 2 and feats[0].shape[1] >= 2 and not dim:  # keep two directions where there are two
        tica = TICA(lagtime=lag, dim=2).fit(usable).fetch_model()
        offset = tica.transform(np.zeros((1, feats[0].shape[1])))[0]
        projection = tica.transform(np.eye(feats[0].shape[1])) - offset
    ys = [f @ projection + offset for f in feats]
    y_all = np.concatenate(ys)
    stride = max(1, len(y_all) // int(max_fit_frames))
    k_micro = n_states if method == "kmeans" else int(n_microstates or max(20, 10 * n_states))
    k_micro = min(k_micro, max(n_states, len(y_all) // 10))
    if len(y_all) < 10 * n_states:
        raise ValueError(f"{len(y_all)} frames are too few to find {n_states} states; give more MD")
    km = KMeans(k_micro, init_strategy="kmeans++", fixed_seed=int(seed) + 1, n_jobs=1).fit(y_all[::stride]).fetch_model()
    centres = np.asarray(km.cluster_centers, dtype=np.float64)
    dtrajs = [np.asarray(km.transform(y), dtype=int) for y in ys]
    if method == "kmeans":
        micro_state = np.arange(k_micro)
    else:
        micro_state = _pcca_lumping(dtrajs, centres, n_states, lag)
    counts = np.bincount(micro_state[np.concatenate(dtrajs)], minlength=n_states)
    order = np.argsort(-counts, kind="stable")  # most populated first
    rank = np.empty(n_states, dtype=int)
    rank[order] = np.arange(n_states)
    micro_state = rank[micro_state]
    labels = micro_state[np.concatenate(dtrajs)]
    angles = np.arctan2(np.concatenate(feats)[:, len(atoms):], np.concatenate(feats)[:, : len(atoms)])
    descriptions, fractions = [], []
    for k in range(n_states):
        sel = labels == k
        fractions.append(float(sel.mean()))
        descriptions.append(", ".join(f"{n} {_circular_mean_deg(angles[sel, j]):.0f}" for j, n in enumerate(names)) if sel.any()
                            else "no MD frame")
    return DiscoveredStates(
        n_atoms=int(n_atoms), dihedral_names=names, dihedral_atoms=[[int(a) for a in q] for q in atoms],
        offset=[float(v) for v in offset], projection=projection.tolist(), centres=centres.tolist(),
        microstate_states=[int(s) for s in micro_state], names=[f"S{k + 1}" for k in range(n_states)],
        descriptions=descriptions, fit_populations=fractions, lag=lag, method=method,
        **_outside_rule(y_all, outside_margin, seed),
    )


def _outside_rule(points, margin, seed, n_keep=2000, quantile=0.999):
    """``outside_points`` and ``outside_radius`` from fitting frames' TICA coordinates."""
    from scipy.spatial import cKDTree

    if margin <= 0:
        return dict(outside_points=[], outside_radius=0.0)
    rng = np.random.default_rng(seed)
    keep = points[np.sort(rng.choice(len(points), min(n_keep, len(points)), replace=False))]
    nn = cKDTree(keep).query(keep, k=2)[0][:, 1]  # leave-one-out nearest-neighbour distances
    return dict(outside_points=keep.tolist(), outside_radius=float(margin * np.quantile(nn, quantile)))


def _pcca_lumping(dtrajs, centres, n_states, lag):
    """Metastable set of each microstate: PCCA+ of a reversible maximum-likelihood Markov model."""
    from deeptime.markov import TransitionCountEstimator
    from deeptime.markov.msm import MaximumLikelihoodMSM

    n_micro = len(centres)
    usable = [d for d in dtrajs if len(d) > lag]
    counts = TransitionCountEstimator(lagtime=lag, count_mode="sliding", n_states=n_micro).fit(usable).fetch_model()
    try:
        msm = MaximumLikelihoodMSM(reversible=True).fit(counts).fetch_model()
        if msm.n_states <= n_states:
            raise ValueError(f"its largest connected set has only {msm.n_states} microstates")
        memberships = msm.pcca(n_states).memberships
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        raise ValueError(
            f"no Markov model of {n_states} metastable states could be built from this MD at lag {lag} frames ({exc}); "
            "give fewer states, a shorter lag, or longer MD, or use method='kmeans' (arbg free-energy --discover-method kmeans)"
        ) from None
    active = np.asarray(msm.count_model.state_symbols, dtype=int)
    micro_state = np.full(n_micro, -1, dtype=int)
    micro_state[active] = np.asarray(memberships).argmax(1)
    present = np.unique(micro_state[active])
    if len(present) < n_states:  # a PCCA+ set that holds no microstate as its largest membership
        raise ValueError(
            f"PCCA+ found only {len(present)} distinct metastable sets of {n_states} in this MD (lag {lag} frames): "
            "give fewer states or longer MD, or use method='kmeans'"
        )
    for i in np.flatnonzero(micro_state < 0):  # outside the connected set: the nearest connected microstate's set
        d = ((centres[active] - centres[i]) ** 2).sum(1)
        micro_state[i] = micro_state[active[int(d.argmin())]]
    return micro_state


def state_free_energy_plot(results, path, title=None, discovered=None, tica_points=None, tica_labels=None):
    """Bar chart of each state's -ln P (kT) with error bars; with ``discovered`` and fitting
    frames' TICA coordinates, a second panel shows them coloured by state.

    Parameters
    ----------
    results : dict
        name -> dict(free_energy, free_energy_error) as :func:`~openmm_arbg.analysis.states.state_populations` returns.
    path : str
        PNG file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    f = np.array([results[n]["free_energy"] for n in names], dtype=float)
    df = np.array([results[n]["free_energy_error"] for n in names], dtype=float)
    panels = 2 if tica_points is not None and len(tica_points) and np.shape(tica_points)[1] >= 2 else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4))
    ax = axes[0] if panels == 2 else axes
    shown = np.isfinite(f)
    ax.bar(np.flatnonzero(shown), f[shown] - (f[shown].min() if shown.any() else 0.0),
           yerr=np.where(np.isfinite(df[shown]), df[shown], 0.0), capsize=4, color="C0")
    for i in np.flatnonzero(~shown):
        ax.text(i, 0, "never\nvisited", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30 if max(len(n) for n in names) > 6 else 0)
    ax.set_ylabel("free energy - lowest (kT)")
    ax.set_title(title or "state free energies (-ln P)")
    if panels == 2:
        ax2 = axes[1]
        pts = np.asarray(tica_points)
        lab = np.asarray(tica_labels)
        for k, name in enumerate(discovered.names if discovered is not None else sorted(set(lab.tolist()))):
            sel = lab == k
            if sel.any():
                ax2.scatter(pts[sel, 0], pts[sel, 1], s=2, alpha=0.4, color=f"C{k % 10}", label=name, rasterized=True)
        ax2.set_xlabel("TIC 1")
        ax2.set_ylabel("TIC 2")
        ax2.set_title("MD frames the states were found on")
        ax2.legend(markerscale=6, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


STATE_ESS_WARNING = 100  # effective proposals inside a state below which describe_results adds a note


def describe_results(results, states=None):
    """Lines ``P(name) = ... %  -ln P = ...`` for :func:`~openmm_arbg.analysis.states.state_populations`
    output; ``states`` (name -> expression or callable) adds each expression."""
    lines = []
    ess = min((r["ess"] for r in results.values() if "ess" in r), default=None)
    if ess is not None and ess < 20:
        lines.append(f"  warning: the weights' ESS is {ess:.1f}: these populations rest on a handful of proposals and their "
                     "errors are not error bars (more proposals, or a better model)")
    thin = [f"{name} ({r['state_ess']:.0f})" for name, r in results.items()
            if r.get("state_ess") is not None and r["population"] > 0 and r["state_ess"] < STATE_ESS_WARNING]
    if thin and (ess is None or ess >= 20):
        lines.append("  note: inside " + ", ".join(thin) + " the weights' ESS is under " + f"{STATE_ESS_WARNING}: those "
                     "populations rest on a few dozen effective proposals and can be off by more than their bootstrap errors; "
                     "check them with more proposals or a reference (arbg metadynamics, arbg umbrella)")
    for name, r in results.items():
        p, dp = r["population"], r["population_error"]
        what = f"   ({states[name]})" if states and isinstance(states.get(name), str) else ""
        if p <= 0:
            lines.append(f"  P({name}) = 0.00 % (never visited: no frame or proposal in it)   -ln P = inf kT{what}")
        elif not math.isfinite(dp):  # a chain that never left the state shows no crossing to measure an error by
            lines.append(f"  P({name}) = {100 * p:.2f} %, error undetermined (no run both enters and leaves the state)   "
                         f"-ln P = {r['free_energy']:.3f} kT{what}")
        elif math.isfinite(r["free_energy_error"]):
            lines.append(f"  P({name}) = {100 * p:.2f} +- {100 * dp:.2f} %   -ln P = {r['free_energy']:.3f} +- "
                         f"{r['free_energy_error']:.3f} kT{what}")
        else:  # the delta method's dP/P means nothing when the error of P reaches P
            lines.append(f"  P({name}) = {100 * p:.2f} +- {100 * dp:.2f} %   -ln P = {r['free_energy']:.3f} kT, error "
                         f"undetermined (the error of P reaches P){what}")
    return lines
