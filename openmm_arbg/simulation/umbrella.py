"""Umbrella sampling on dihedrals, combined with MBAR: converged references for rare basins.

Plain MD cannot estimate the population of a basin it almost never visits (alanine dipeptide's
C7ax at 300 K). Umbrella sampling restrains one or more dihedrals near a grid of
centres with harmonic biases ``0.5 k d^2`` (``d`` the periodic angular distance, rad), runs
Langevin MD in each window, and MBAR (pymbar) recombines all windows into unbiased averages with
uncertainties. This module is how the project makes the independent references its benchmarks
and the demo are compared against.

* :func:`dihedral_grid`: window centres on a regular grid over one or more dihedrals.
* :func:`run_umbrella`: runs the windows (in worker processes; resumable: each finished window
  is its own file in the output folder).
* :class:`UmbrellaResult` / :func:`load_umbrella`: MBAR over the windows; unbiased probabilities
  and basin free energies with standard errors, and per-frame unbiased weights.

Reduced bias energies are all MBAR needs: the unbiased potential is the same in every window,
so ``u_k(x) = beta * bias_k(dihedrals(x))`` up to a term common to all states.
"""

import hashlib
import json
import math
import multiprocessing
import os

import numpy as np
import openmm
import openmm.unit as unit
from scipy.special import logsumexp

from ..analysis.observables import dihedral_regions, dihedrals as compute_dihedrals
from ..molecule.topology import MolecularGraph
from ..physics import kT_kJ_per_mol, platform_properties
from ..sampling.importance import free_energy_from_probability
from ..utils import atomic_write, check_settings_file
from .md import langevin_integrator, langevin_settings, resumed_platform, rotate_dihedrals

__all__ = ["dihedral_grid", "run_umbrella", "load_umbrella", "UmbrellaResult", "free_energy_from_probability"]

_BIAS = "0.5*k_umbrella*d^2; d = min(dt, 2*pi - dt); dt = abs(theta - theta0); pi = 3.141592653589793"


def dihedral_grid(n_per_dihedral, n_dihedrals=2):
    """Window centres (rad) on a regular periodic grid: shape (n_per_dihedral**n_dihedrals, n_dihedrals).

    Centres are at ``-pi + (i + 0.5) * 2 pi / n``, so no centre sits on the +-pi seam.
    """
    n = int(n_per_dihedral)
    if n < 2:
        raise ValueError("need at least 2 windows per dihedral")
    axis = -math.pi + (np.arange(n) + 0.5) * 2 * math.pi / n
    mesh = np.meshgrid(*([axis] * int(n_dihedrals)), indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def _angular_distance(a, b):
    d = np.abs(np.asarray(a) - np.asarray(b)) % (2 * math.pi)
    return np.minimum(d, 2 * math.pi - d)


def _window_path(output_dir, i):
    return os.path.join(output_dir, f"window_{i:04d}.npz")


_MAX_TRIES = 3


def _simulate_window(system, positions_nm, settings, seed, stereo):
    """Pull, equilibrate and run one window; positions of every saved frame (nm), or None if the
    dynamics blew up (non-finite or exploding coordinates, or a stereocentre inverted)."""
    T = settings["temperature_K"]
    integrator = langevin_integrator(settings, seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(settings["platform"]),
                             platform_properties(settings["platform"]))  # CPU: OPENMM_CPU_THREADS threads, 1 by default
    context.setPositions([openmm.Vec3(*map(float, p)) for p in positions_nm])
    context.setParameter("k_umbrella", settings["pull_k"])
    # pull: minimise and equilibrate under a stiff restraint, then relax to the production constant
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=500)
    context.setVelocitiesToTemperature(T * unit.kelvin, seed)
    integrator.step(int(settings["pull_steps"]))
    context.setParameter("k_umbrella", settings["k"])
    integrator.step(int(settings["equilibration_steps"]))
    n_frames = settings["n_steps"] // settings["report_interval"]
    xyz = np.empty((n_frames, system.getNumParticles(), 3), dtype=np.float32)
    max_span = float(np.ptp(positions_nm, axis=0).max()) + 5.0  # nm: a molecule in vacuum does not grow by 5 nm
    for f in range(n_frames):
        integrator.step(settings["report_interval"])
        xyz[f] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not (np.isfinite(xyz[f]).all() and np.ptp(xyz[f], axis=0).max() < max_span):
            return None
    if not stereo.check(xyz).all():
        return None
    return xyz


def _run_window(job):
    """Run one window in this process and save it (called in worker processes). A window whose
    dynamics blows up is discarded whole and run again with another seed (up to ``_MAX_TRIES``)."""
    (i, system_xml, positions_nm, graph, dihedrals, centre, settings, output_dir) = job
    from ..molecule.stereochemistry import StereoChecker

    stereo = StereoChecker(graph).record(positions_nm)
    positions_nm = rotate_dihedrals(positions_nm, graph.neighbors, dihedrals, centre)
    system = openmm.XmlSerializer.deserialize(system_xml)
    bias = openmm.CustomTorsionForce(_BIAS)
    bias.addGlobalParameter("k_umbrella", settings["pull_k"])
    bias.addPerTorsionParameter("theta0")
    for atoms, c in zip(dihedrals, centre):
        bias.addTorsion(*[int(a) for a in atoms], [float(c)])
    system.addForce(bias)
    for attempt in range(_MAX_TRIES):
        seed = (int(settings["seed"]) * 100003 + i + 1 + 7919 * attempt) % 2**31
        xyz = _simulate_window(system, positions_nm, settings, seed, stereo)
        if xyz is not None:
            break
    else:
        raise RuntimeError(
            f"umbrella window {i} (centre {np.degrees(centre).round(1).tolist()} deg) blew up {_MAX_TRIES} times; "
            "use a smaller time step (--timestep-fs) or a softer restraint (--k)"
        )
    values = compute_dihedrals(xyz, dihedrals)
    out = {"dihedrals": values, "centre": np.asarray(centre, dtype=float), "attempts": attempt + 1}
    if settings["save_positions"]:
        out["positions"] = xyz
    with atomic_write(_window_path(output_dir, i), "wb") as f:
        np.savez(f, **out)
    return i


def run_umbrella(molecular_system, dihedrals, centres, output_dir, k=100.0, n_steps=100000, report_interval=100,
                 equilibration_steps=10000, pull_k=None, pull_steps=2000, temperature=None, timestep_fs=1.0,
                 friction_per_ps=1.0, seed=0, platform=None, n_workers=1, save_positions=False, max_samples_per_window=200,
                 progress=True, start_positions=None):
    """Run harmonic umbrella windows on dihedrals; resume if ``output_dir`` holds finished windows.

    Parameters
    ----------
    molecular_system : openmm_arbg.systems.MolecularSystem
        Unconstrained is not required here (the bias acts on dihedrals only), but the same
        time step rules apply.
    dihedrals : array_like of int (n_dihedrals, 4)
        Atom indices of the restrained dihedrals (e.g. mdtraj's ``compute_phi`` indices).
    centres : array_like (n_windows, n_dihedrals), rad
        Window centres (see :func:`dihedral_grid`).
    output_dir : str
        One ``window_XXXX.npz`` per finished window, and ``settings.json``.
    k : float, kJ/mol/rad^2
        Production force constant of every restraint. Neighbouring windows must overlap:
        ``sqrt(kT / k)`` should be about half the grid spacing or more.
    n_steps, report_interval, equilibration_steps : int
        Production steps per window, steps between saved frames, equilibration steps.
    pull_k : float, kJ/mol/rad^2, optional
        Stiffer constant for the initial minimisation and ``pull_steps`` of MD that settle the
        molecule in the window (default ``10 k``). Each window starts from the input structure
        with its dihedrals set to the window centre by rigid rotation about their central bonds.
        A window whose dynamics blows up or inverts a stereocentre is run again with another
        seed (at most 3 times).
    temperature : float, K, optional
        Default: the system's temperature.
    timestep_fs, friction_per_ps : float
    seed : int
    platform : str, optional
        Default: the fastest for the System in a short speed test.
    n_workers : int
        Worker processes (one Context each, built inside the worker).
    save_positions : bool
        Keep every frame's positions (nm) as well as the dihedrals (for training data).
    max_samples_per_window : int
        Passed to :class:`UmbrellaResult` (analysis only; not part of the run's settings).
    progress : bool
    start_positions : array_like (m, n_atoms, 3), nm, optional
        Frames of equilibrium MD of the molecule: each window starts from one of them, drawn at
        random (``seed``), instead of from the system's single structure, so that what the
        restraints leave free (other residues' dihedrals, side chains) starts from its equilibrium
        distribution rather than relaxing from one structure during the window. Their hash is
        part of the run's settings.

    Returns
    -------
    UmbrellaResult
    """
    from ..utils import progress_bar as tqdm  # tqdm on a terminal, plain lines in logs

    dihedrals = np.asarray(dihedrals, dtype=int).reshape(-1, 4)
    n_atoms = molecular_system.system.getNumParticles()
    if len(dihedrals) == 0 or dihedrals.min() < 0 or dihedrals.max() >= n_atoms:
        raise ValueError(f"dihedrals must be quadruples of atom indices in [0, {n_atoms}) ({n_atoms} atoms); got {dihedrals.tolist()}")
    centres = np.asarray(centres, dtype=float)
    if centres.ndim != 2 or centres.shape[1] != len(dihedrals) or len(centres) == 0 or not np.isfinite(centres).all():
        raise ValueError(f"centres must be finite angles (rad) of shape (n_windows, {len(dihedrals)}) for {len(dihedrals)} dihedrals; "
                         f"got shape {centres.shape}")
    if not k > 0:
        raise ValueError(f"k must be positive (kJ/mol/rad^2), got {k}")
    for name, value in (("n_workers", n_workers), ("max_samples_per_window", max_samples_per_window)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    platform = resumed_platform(platform, output_dir)  # a run resumes on the platform it started on
    settings = langevin_settings(
        molecular_system, n_steps, report_interval, equilibration_steps, temperature, timestep_fs, friction_per_ps, seed, platform
    )
    settings.update(
        dihedrals=dihedrals.tolist(),
        centres=centres.tolist(),
        k=float(k),
        pull_k=float(10 * k if pull_k is None else pull_k),
        pull_steps=int(pull_steps),
        save_positions=bool(save_positions),
    )
    starts = None
    if start_positions is not None:
        frames = np.asarray(start_positions, dtype=float)
        if frames.ndim != 3 or frames.shape[1:] != (n_atoms, 3) or len(frames) == 0 or not np.isfinite(frames).all():
            raise ValueError(f"start_positions must be finite frames of shape (m >= 1, {n_atoms}, 3) nm; got shape {frames.shape}")
        picks = np.random.default_rng(int(seed)).integers(len(frames), size=len(centres))
        starts = frames[picks]
        settings["start_frames_sha256"] = hashlib.sha256(np.ascontiguousarray(starts, dtype=np.float32).tobytes()).hexdigest()
    os.makedirs(output_dir, exist_ok=True)
    check_settings_file(os.path.join(output_dir, "settings.json"), settings, "umbrella windows", optional_keys=("system_sha256",))

    system_xml = openmm.XmlSerializer.serialize(molecular_system.system)
    positions = np.asarray(molecular_system.positions_nm(), dtype=float)
    todo = [i for i in range(len(centres)) if not os.path.exists(_window_path(output_dir, i))]
    graph = MolecularGraph.from_topology(molecular_system.topology)
    jobs = [(i, system_xml, positions if starts is None else starts[i], graph, dihedrals, centres[i], settings, output_dir)
            for i in todo]
    bar = tqdm(total=len(centres), initial=len(centres) - len(todo), unit="window", desc="umbrella", disable=not progress)
    if n_workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(int(n_workers)) as pool:
            for _ in pool.imap_unordered(_run_window, jobs):
                bar.update(1)
    else:
        for job in jobs:
            _run_window(job)
            bar.update(1)
    bar.close()
    return load_umbrella(output_dir, max_samples_per_window)


def load_umbrella(output_dir, max_samples_per_window=200):
    """Read the windows written by :func:`run_umbrella` (all must be finished); see
    :class:`UmbrellaResult` for ``max_samples_per_window``."""
    with open(os.path.join(output_dir, "settings.json")) as f:
        settings = json.load(f)
    n = len(settings["centres"])
    missing = [i for i in range(n) if not os.path.exists(_window_path(output_dir, i))]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {n} umbrella windows in {output_dir} are not finished (e.g. window {missing[0]}); "
            "run run_umbrella (or `arbg umbrella`) again with the same settings to finish them"
        )
    values, positions = [], []
    for i in range(n):
        with np.load(_window_path(output_dir, i)) as data:
            values.append(data["dihedrals"])
            if "positions" in data.files:
                positions.append(data["positions"])
    return UmbrellaResult(settings, values, positions or None, max_samples_per_window)


class UmbrellaResult:
    """Umbrella windows and their MBAR combination.

    Attributes
    ----------
    settings : dict
        What was run (temperature_K, k in kJ/mol/rad^2, centres in rad, ...).
    dihedrals : list of numpy.ndarray (n_frames, n_dihedrals), rad
        The restrained dihedrals of every frame, per window.
    positions : list of numpy.ndarray (n_frames, n_atoms, 3), nm, or None
    max_samples_per_window : int
        MBAR uses each window's decorrelated frames (pymbar statistical inefficiency), thinned
        evenly to at most this many (MBAR's time and memory grow as windows x samples).
    """

    def __init__(self, settings, dihedrals, positions=None, max_samples_per_window=200):
        self.settings = settings
        self.max_samples_per_window = int(max_samples_per_window)
        self.dihedrals = [np.asarray(v, dtype=float) for v in dihedrals]
        self.positions = positions
        self.centres = np.asarray(settings["centres"], dtype=float)
        self.beta_k = float(settings["k"]) / kT_kJ_per_mol(settings["temperature_K"])  # 1/rad^2
        self._mbar = None

    def _reduced_bias(self, values):
        """(n_windows, n_frames) reduced bias energies of frames with dihedral ``values``."""
        d = _angular_distance(values[None, :, :], self.centres[:, None, :])
        return 0.5 * self.beta_k * np.sum(d**2, axis=2)

    def _subsample(self):
        """Frame indices per window, decorrelated by pymbar's statistical inefficiency."""
        from pymbar import timeseries

        kept = []
        for i, v in enumerate(self.dihedrals):
            bias = 0.5 * self.beta_k * np.sum(_angular_distance(v, self.centres[i]) ** 2, axis=1)
            g = max(timeseries.statistical_inefficiency(bias), *(timeseries.statistical_inefficiency(np.cos(v[:, j])) for j in range(v.shape[1])))
            idx = np.asarray(timeseries.subsample_correlated_data(bias, g=g), dtype=int)
            if len(idx) > self.max_samples_per_window:  # thin evenly: MBAR's cost grows as windows x samples
                idx = idx[np.linspace(0, len(idx) - 1, self.max_samples_per_window).astype(int)]
            kept.append(idx)
        return kept

    @property
    def mbar(self):
        """pymbar.MBAR over the decorrelated frames of all windows (built on first use)."""
        if self._mbar is None:
            from pymbar import MBAR

            self._kept = self._subsample()
            values = np.concatenate([v[idx] for v, idx in zip(self.dihedrals, self._kept)])
            self._values = values
            n_k = np.array([len(idx) for idx in self._kept])
            # the self-consistent/Newton solver: pymbar's default (hybr) is far slower with hundreds of states
            protocol = ({"method": "adaptive", "options": {"min_sc_iter": 0}},)
            try:
                self._mbar = MBAR(self._reduced_bias(values), n_k, initialize="BAR", solver_protocol=protocol)
            except Exception as exc:  # pymbar raises its own errors (even NameError) when it cannot solve
                raise ValueError(
                    f"MBAR could not combine the {len(n_k)} umbrella windows ({n_k.sum()} decorrelated frames, fewest "
                    f"{n_k.min()} in a window; pymbar: {type(exc).__name__}: {' '.join(str(exc).split()) or 'no message'}): the "
                    "windows are too short or do not overlap. Run longer windows (arbg umbrella --ps), more windows "
                    "(--windows) or a softer restraint (--k)"
                ) from None
        return self._mbar

    @property
    def n_uncorrelated(self):
        """Decorrelated frames per window used by MBAR."""
        _ = self.mbar
        return np.array([len(idx) for idx in self._kept])

    def overlap(self, threshold=0.03):
        """How well the windows share frames, and where they come apart.

        MBAR's overlap matrix ``O[i, j]`` is the probability that a frame of window ``i``, had it been
        drawn from all windows' mixture, came from window ``j`` (pymbar ``compute_overlap``). Windows
        ``i`` and ``j`` are linked by ``min(O[i, j], O[j, i])``. Windows that no chain of links of at
        least ``threshold`` (0.03, the guideline of Klimovich, Shirts and Mobley, J. Comput. Aided
        Mol. Des. 2015) joins share too few frames for their free-energy difference to be trusted,
        whatever MBAR's error says: the restraint is too soft for the free-energy slope there (each
        window slides down it, away from its centre) or the windows are too far apart.

        Returns
        -------
        dict
            ``groups``: lists of window indices joined by links of at least ``threshold``, largest
            first (one group when all are joined); ``weakest``: ``(i, j, link)``, the weakest link
            that the windows need to be joined at all (the smallest link of the maximum spanning
            tree: below ``threshold`` exactly when there are several groups); ``spectral_gap``: one
            minus the overlap matrix's second-largest eigenvalue; ``threshold``.
        """
        from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

        o = self.mbar.compute_overlap()
        m = np.asarray(o["matrix"], dtype=float)
        link = np.minimum(m, m.T)
        n = len(link)
        # the maximum spanning tree of the links is the minimum one of 2 - link (> 0: a zero is no edge)
        tree = minimum_spanning_tree(np.where(np.eye(n, dtype=bool), 0.0, 2.0 - link)).tocoo()
        if tree.nnz:
            k = int(np.argmax(tree.data))
            weakest = (int(tree.row[k]), int(tree.col[k]), float(link[tree.row[k], tree.col[k]]))
        else:
            weakest = (0, 0, 1.0)
        n_groups, labels = connected_components(link >= threshold, directed=False)
        groups = sorted((np.flatnonzero(labels == g).tolist() for g in range(n_groups)), key=len, reverse=True)
        eig = np.sort(np.abs(np.asarray(o["eigenvalues"], dtype=float)))[::-1]
        return dict(groups=groups, weakest=weakest, spectral_gap=float(1.0 - eig[1]) if n > 1 else 1.0, threshold=float(threshold))

    def probability(self, indicator):
        """Unbiased probability of a region, with its standard error.

        Parameters
        ----------
        indicator : callable
            Maps dihedral values (n, n_dihedrals) in rad to a bool array (n,).

        Returns
        -------
        (float, float)
            The error is NaN when no frame, or every frame, lies in the region.
        """
        mbar = self.mbar
        a = np.asarray(indicator(self._values), dtype=float)
        if not a.any() or a.all():  # no frame (or every frame) in it: MBAR's error of a constant is undefined
            return float(a.all()), math.nan
        with np.errstate(divide="ignore"):
            out = mbar.compute_expectations(a, u_kn=np.zeros(len(a)))
        return float(np.ravel(out["mu"])[0]), float(np.ravel(out["sigma"])[0])

    def profile(self, n_bins=36):
        """Potential of mean force of the restrained dihedrals on a periodic histogram: for each of
        ``n_bins`` (per dihedral) equal bins, ``F = -ln(P(bin) / volume)`` in kT relative to its
        minimum (a density per rad^d, comparable with
        :func:`~openmm_arbg.sampling.control.dihedral_profile` at the bin centres, up to the bin
        average), with the MBAR standard error ``dP / P`` (inf for an empty bin).

        Returns
        -------
        centres : numpy.ndarray (n_bins**d, d), rad
            Bin centres, the last dihedral varying fastest.
        free_energy, error : numpy.ndarray (n_bins**d,), kT
        """
        d = self.centres.shape[1]
        edges = np.linspace(-math.pi, math.pi, int(n_bins) + 1)
        width = edges[1] - edges[0]
        _ = self.mbar
        index = np.clip(np.floor((np.asarray(self._values) + math.pi) / width).astype(int), 0, int(n_bins) - 1)
        flat = np.ravel_multi_index(tuple(index.T), (int(n_bins),) * d)
        p, dp = np.zeros(int(n_bins) ** d), np.full(int(n_bins) ** d, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for b in np.unique(flat):  # one bin at a time: a joint computation over hundreds of bins can fail (SVD)
                out = self.mbar.compute_expectations((flat == b).astype(float), u_kn=np.zeros(len(flat)))
                p[b], dp[b] = float(np.ravel(out["mu"])[0]), float(np.ravel(out["sigma"])[0])
            f = -np.log(p / width**d)
            err = np.where(p > 0, dp / p, np.inf)
        f = np.where(np.isfinite(f), f, np.inf)
        axis = 0.5 * (edges[1:] + edges[:-1])
        mesh = np.meshgrid(*([axis] * d), indexing="ij")
        return np.stack([m.reshape(-1) for m in mesh], axis=1), f - np.min(f), err

    def halves(self):
        """The first and the second half of every window's frames, as two :class:`UmbrellaResult`.

        Equal populations from both (within their errors) are the check that the windows are
        equilibrated: MBAR's errors count the correlation of the restrained dihedrals only, so a
        slow coordinate the restraints leave free (another residue's psi, a side chain) still
        relaxing from the starting structure shows up only as a drift between the halves.
        """
        cuts = [len(v) // 2 for v in self.dihedrals]
        out = []
        for half in ([slice(None, c) for c in cuts], [slice(c, None) for c in cuts]):
            dihedrals = [v[s] for v, s in zip(self.dihedrals, half)]
            positions = None if self.positions is None else [np.asarray(x)[s] for x, s in zip(self.positions, half)]
            out.append(UmbrellaResult(self.settings, dihedrals, positions, self.max_samples_per_window))
        return out

    def free_energy(self, indicator):
        """``F(region) - F(rest)`` in kT, with its standard error (:func:`free_energy_from_probability`)."""
        return free_energy_from_probability(*self.probability(indicator))

    def log_weights(self):
        """Unbiased log weights of every frame of every window (concatenated in window order),
        ``-log sum_k N_k exp(f_k - u_k(x))``, normalised to log-sum 0."""
        mbar = self.mbar
        values = np.concatenate(self.dihedrals)
        n_k = np.array([len(v) for v in self.dihedrals])  # every frame of every window is used here
        log_w = np.concatenate([  # in blocks of frames: windows x frames can be gigabytes
            -logsumexp(mbar.f_k[:, None] - self._reduced_bias(values[start : start + 20000]), b=n_k[:, None], axis=0)
            for start in range(0, len(values), 20000)
        ])
        return log_w - logsumexp(log_w)

    def resample(self, n, indicator=None, rng=None):
        """Draw ``n`` frames (positions, nm) from the unbiased distribution, optionally restricted
        to a region: systematic resampling with the MBAR weights of :meth:`log_weights`.

        Useful to add Boltzmann-distributed frames of a basin plain MD rarely visits to a training
        set (requires the windows to have been run with ``save_positions=True``).

        Parameters
        ----------
        n : int
        indicator : callable, optional
            Maps dihedral values (m, n_dihedrals) in rad to a bool array (m,).
        rng : numpy.random.Generator or int, optional

        Returns
        -------
        numpy.ndarray (n, n_atoms, 3), nm
        """
        from ..sampling.importance import resample

        if self.positions is None:
            raise ValueError("these umbrella windows were run without positions; rerun with save_positions=True (--save-positions)")
        log_w = self.log_weights()
        if indicator is not None:
            inside = np.asarray(indicator(np.concatenate(self.dihedrals)), dtype=bool)
            if not inside.any():
                raise ValueError("no umbrella frame lies in the requested region")
            log_w = np.where(inside, log_w, -np.inf)
        picks = resample(log_w, int(n), method="systematic", rng=rng)
        return np.concatenate(self.positions)[picks]

    def region_free_energies(self, names):
        """Unbiased probability and free energy of the regions :func:`~openmm_arbg.analysis.observables.dihedral_regions`
        defines for these dihedrals (``phi>0``; the alanine dipeptide basins with phi and psi).

        Parameters
        ----------
        names : list of str
            What each restrained dihedral is (``"phi"``, ``"psi"`` or atom indices), in order.

        Returns
        -------
        dict
            Region name -> dict with ``probability``, ``probability_error``, ``free_energy_kT``
            (``F(region) - F(rest)``) and ``free_energy_error_kT``.
        """
        out = {}
        for name, indicator in dihedral_regions(names).items():
            p, dp = self.probability(indicator)
            f, df = free_energy_from_probability(p, dp)
            out[name] = dict(probability=p, probability_error=dp, free_energy_kT=f, free_energy_error_kT=df)
        return out

    def state_free_energies(self, states, topology):
        """Unbiased populations of states defined on positions (expressions, callables or
        discovered states: :func:`~openmm_arbg.analysis.states.state_populations`'s ``states``),
        from MBAR over the windows' decorrelated frames. Needs the windows' positions
        (``save_positions=True``).

        Returns
        -------
        dict
            State name -> dict with ``probability``, ``probability_error``, ``free_energy_kT``
            (``F(state) - F(rest)``) and ``free_energy_error_kT``.
        """
        from ..analysis.states import state_indicators

        if self.positions is None:
            raise ValueError("states defined on positions need the windows' positions: run the windows with "
                             "save_positions=True (arbg umbrella --save-positions)")
        _ = self.mbar
        frames = np.concatenate([np.asarray(x)[idx] for x, idx in zip(self.positions, self._kept)])
        out = {}
        for name, mask in state_indicators(states, frames, topology).items():
            p, dp = self.probability(lambda values, mask=mask: mask)
            f, df = free_energy_from_probability(p, dp)
            out[name] = dict(probability=p, probability_error=dp, free_energy_kT=f, free_energy_error_kT=df)
        return out

    def summary(self, names, command=None):
        """What was run and what MBAR makes of it (the ``result.json`` of ``arbg umbrella``): system,
        temperature, windows, frames, MBAR frames, and :meth:`region_free_energies`."""
        n_unc = self.n_uncorrelated
        out = dict(
            system=self.settings.get("system"),
            temperature_K=self.settings["temperature_K"],
            windows=len(n_unc),
            frames=int(sum(len(v) for v in self.dihedrals)),
            mbar_frames=int(n_unc.sum()),
            min_mbar_frames_per_window=int(n_unc.min()),
            mbar_samples_per_window=self.max_samples_per_window,
        )
        if command is not None:
            out["command"] = command
        out.update(self.region_free_energies(names))
        return out

    def export(self, path, topology, n, region="all", names=None, rng=None):
        """Write ``n`` frames resampled from the unbiased distribution (:meth:`resample`) to a
        trajectory file (atomically; the format from the extension, e.g. ``frames.dcd``).

        Parameters
        ----------
        path : str
        topology : openmm.app.Topology or mdtraj.Topology
        n : int
        region : str
            ``"all"``, or a region of :func:`~openmm_arbg.analysis.observables.dihedral_regions`
            (e.g. ``"phi>0"``) to restrict the frames to.
        names : list of str, optional
            What each restrained dihedral is (needed for a region).
        rng : numpy.random.Generator or int, optional
        """
        import mdtraj

        indicator = None
        if region not in (None, "all"):
            regions = dihedral_regions(names or [])
            if region not in regions:
                raise ValueError(
                    f"region {region!r} is not defined for the dihedrals {list(names or [])}; defined: {['all', *regions]} "
                    "(phi>0 needs phi, the alanine dipeptide basins need phi and psi)"
                )
            indicator = regions[region]
        xyz = self.resample(n, indicator, rng=rng)
        if not isinstance(topology, mdtraj.Topology):
            topology = mdtraj.Topology.from_openmm(topology)
        with atomic_write(path, mode=None) as tmp:
            mdtraj.Trajectory(xyz.astype(np.float32), topology).save(tmp)
        return path
