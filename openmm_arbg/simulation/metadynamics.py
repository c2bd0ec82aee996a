"""Well-tempered metadynamics on dihedrals, then MD under the frozen bias, reweighted: a reference
where several slow dihedrals must move together.

Umbrella windows restrain the dihedrals they are given and leave everything else to plain MD in
each window; when two coordinates are slow together (a backbone psi and a side chain's chi1), stiff
windows on both need a grid of thousands of windows and soft ones slide off their centres. Here one
trajectory does the work in two phases:

1. **Build** (``build_steps``): well-tempered metadynamics (OpenMM's
   :class:`openmm.app.Metadynamics`) on the dihedrals deposits Gaussians until the bias ``V(s)``
   roughly fills the wells of their free-energy surface (bias factor ``gamma``: the dihedrals are
   sampled as at ``gamma T``). Its frames are not used.
2. **Production** (``n_steps``): MD under the bias frozen at the end of the build. A fixed bias
   changes the Boltzmann distribution by ``exp(-V(s)/kT)`` exactly, so each frame's unbiased weight
   is ``exp(+V(s)/kT)`` (its bias energy is read from the Context, not interpolated here) and any
   population is a ratio of weighted sums, whose standard error counts the weights' time correlation
   (pymbar's statistical inefficiency of the linearised ratio).

Both phases are resumable: each chunk of each phase is its own file holding the Context's state
(and, for the build, the bias), so an interrupted run continues from its last finished chunk.
Hydrogen mass repartitioning (``hydrogen_mass``) lets an unconstrained molecule take 2 fs steps;
it changes the dynamics, never the configurational distribution that is reweighted.
"""

import glob
import json
import math
import os

import numpy as np
import openmm
import openmm.unit as unit

from ..analysis.observables import dihedral_regions, dihedrals as compute_dihedrals
from ..physics import kT_kJ_per_mol, platform_properties, repartition_hydrogen_mass
from ..sampling.importance import free_energy_from_probability
from ..utils import atomic_write, check_settings_file
from .md import langevin_integrator, langevin_settings, resumed_platform

__all__ = ["run_metadynamics", "load_metadynamics", "MetadynamicsResult", "pool_runs"]

_BUILD, _PRODUCTION = "build", "production"


def _chunk_path(output_dir, phase, c):
    return os.path.join(output_dir, f"{phase}_{c:04d}.npz")


def _finished_chunks(output_dir, phase):
    """Indices of the consecutive finished chunks of a phase, from 0."""
    c = 0
    while os.path.exists(_chunk_path(output_dir, phase, c)):
        c += 1
    return c


def _bias_variables(dihedrals, settings):
    from openmm.app import BiasVariable

    variables = []
    for atoms in dihedrals:
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*[int(a) for a in atoms], [])
        variables.append(BiasVariable(force, -math.pi, math.pi, math.radians(settings["width_deg"]), True,
                                      int(settings["grid_width"])))
    return variables


def _frozen_bias_force(dihedrals, settings, bias_grid):
    """A ``CustomCVForce`` of the tabulated bias (kJ/mol) on the dihedrals, as OpenMM's
    ``Metadynamics`` builds it (periodic table over [-pi, pi] on each axis)."""
    variables = _bias_variables(dihedrals, settings)
    names = [f"cv{i}" for i in range(len(variables))]
    force = openmm.CustomCVForce(f"table({', '.join(names)})")
    for name, v in zip(names, variables):
        force.addCollectiveVariable(name, v.force)
    widths = [v.gridWidth for v in variables]
    limits = sum(([-math.pi, math.pi] for _ in variables), [])
    values = np.asarray(bias_grid, dtype=float).flatten()
    table = {1: openmm.Continuous1DFunction, 2: openmm.Continuous2DFunction, 3: openmm.Continuous3DFunction}[len(variables)]
    force.addTabulatedFunction("table", table(values, *limits, True) if len(variables) == 1 else table(*widths, values, *limits, True))
    return force


def _new_context(system, settings, seed):
    integrator = langevin_integrator(settings, seed)
    platform = openmm.Platform.getPlatformByName(settings["platform"])
    return openmm.Context(system, integrator, platform, platform_properties(settings["platform"])), integrator


def _state_xml(context):
    return openmm.XmlSerializer.serialize(context.getState(getPositions=True, getVelocities=True))


def _load_chunk_state(path):
    with np.load(path) as data:
        return str(data["state"])


def run_metadynamics(molecular_system, dihedrals, output_dir, n_steps=4_000_000, build_steps=1_000_000, report_interval=500,
                     bias_factor=8.0, height=1.0, width_deg=20.0, deposit_interval=500, grid_width=72, n_chunks=10,
                     equilibration_steps=10000, temperature=None, timestep_fs=1.0, friction_per_ps=1.0, hydrogen_mass=None,
                     seed=0, platform=None, start_positions=None, progress=True):
    """Build a well-tempered metadynamics bias on dihedrals, then run MD under it frozen; resumable.

    Parameters
    ----------
    molecular_system : openmm_arbg.systems.MolecularSystem
    dihedrals : array_like of int (n_dihedrals, 4)
        Atom indices of 1 to 3 dihedrals to bias (OpenMM's metadynamics tabulates at most 3).
    output_dir : str
        ``build_XXXX.npz`` and ``production_XXXX.npz`` chunks and ``settings.json``.
    n_steps : int
        Production steps under the frozen bias (frames are saved from these only).
    build_steps : int
        Metadynamics steps that build the bias (after ``equilibration_steps`` of plain MD).
    report_interval : int
        Production steps between saved frames.
    bias_factor : float
        Well-tempered bias factor gamma > 1: the biased dihedrals are sampled as at ``gamma T``.
    height : float, kJ/mol
        Initial height of each Gaussian.
    width_deg : float, degrees
        Standard deviation of each Gaussian along each dihedral.
    deposit_interval : int
        Steps between Gaussians.
    grid_width : int
        Points of the bias table per dihedral.
    n_chunks : int
        Each phase is run and saved in this many chunks (the granularity of resuming).
    equilibration_steps : int
        Plain MD before the build, after minimisation.
    temperature : float, K, optional
        Default: the system's temperature.
    timestep_fs, friction_per_ps : float
    hydrogen_mass : float, Da, optional
        Repartition mass from each heavy atom to its hydrogens so that they weigh this much (the
        total mass is kept). The configurational distribution is unchanged; with 3 Da an
        unconstrained peptide runs stably at 2 fs.
    seed : int
    platform : str, optional
        Default: the fastest for the System in a short speed test.
    start_positions : array_like (n_atoms, 3), nm, optional
        Where the run starts (default: the system's structure).
    progress : bool

    Returns
    -------
    MetadynamicsResult

    Examples
    --------
    A torsion behind a 20 kJ/mol barrier (8 kT), whose exact probability of phi > 0 is one half:

    >>> import tempfile
    >>> from openmm_arbg.simulation.testsystems import harmonic_chain
    >>> chain, exact = harmonic_chain(4, k_torsion=10.0)
    >>> result = run_metadynamics(chain, [[0, 1, 2, 3]], tempfile.mkdtemp(), n_steps=100000, build_steps=40000,
    ...                           report_interval=50, deposit_interval=200, height=1.5, width_deg=25.0, n_chunks=4,
    ...                           seed=1, platform="Reference", progress=False)
    >>> p, dp = result.probability(lambda phi: phi[:, 0] > 0)
    >>> abs(p - 0.5) < 4 * dp
    True
    """
    from ..molecule.topology import MolecularGraph
    from ..utils import progress_bar

    dihedrals = np.asarray(dihedrals, dtype=int).reshape(-1, 4)
    n_atoms = molecular_system.system.getNumParticles()
    if not 1 <= len(dihedrals) <= 3 or dihedrals.min() < 0 or dihedrals.max() >= n_atoms:
        raise ValueError(f"give 1 to 3 dihedrals as quadruples of atom indices in [0, {n_atoms}); got {dihedrals.tolist()}")
    if not (isinstance(bias_factor, (int, float)) and math.isfinite(bias_factor) and bias_factor > 1):
        raise ValueError(f"bias_factor must be a number > 1 (the dihedrals are sampled as at bias_factor x T); got {bias_factor!r}")
    for name, value in (("height", height), ("width_deg", width_deg)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number; got {value!r}")
    for name, value in (("build_steps", build_steps), ("deposit_interval", deposit_interval), ("grid_width", grid_width),
                        ("n_chunks", n_chunks)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if int(grid_width) < 8:
        raise ValueError(f"grid_width must be at least 8 points per dihedral; got {grid_width}")
    n_chunks = int(n_chunks)
    if build_steps % (n_chunks * deposit_interval):
        raise ValueError(f"build_steps ({build_steps}) must be a multiple of n_chunks x deposit_interval "
                         f"({n_chunks} x {deposit_interval})")
    if n_steps % (n_chunks * report_interval):
        raise ValueError(f"n_steps ({n_steps}) must be a multiple of n_chunks x report_interval ({n_chunks} x {report_interval})")
    if hydrogen_mass is not None and not (isinstance(hydrogen_mass, (int, float)) and 1.0 <= hydrogen_mass <= 5.0):
        raise ValueError(f"hydrogen_mass must be between 1 and 5 Da; got {hydrogen_mass!r}")
    platform = resumed_platform(platform, output_dir)  # a run resumes on the platform it started on
    settings = langevin_settings(molecular_system, n_steps, report_interval, equilibration_steps, temperature, timestep_fs,
                                 friction_per_ps, seed, platform)
    settings.update(
        method="well-tempered metadynamics, then MD under the frozen bias",
        dihedrals=dihedrals.tolist(), build_steps=int(build_steps), bias_factor=float(bias_factor), height_kJ_per_mol=float(height),
        width_deg=float(width_deg), deposit_interval=int(deposit_interval), grid_width=int(grid_width), n_chunks=n_chunks,
        hydrogen_mass_Da=None if hydrogen_mass is None else float(hydrogen_mass),
    )
    start = np.asarray(molecular_system.positions_nm() if start_positions is None else start_positions, dtype=float)
    if start.shape != (n_atoms, 3) or not np.isfinite(start).all():
        raise ValueError(f"start_positions must be one finite frame of shape ({n_atoms}, 3) nm; got shape {start.shape}")
    os.makedirs(output_dir, exist_ok=True)
    check_settings_file(os.path.join(output_dir, "settings.json"), settings, "metadynamics")

    base = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(molecular_system.system))
    if hydrogen_mass is not None:
        repartition_hydrogen_mass(base, MolecularGraph.from_topology(molecular_system.topology), hydrogen_mass)
    bar = progress_bar(total=2 * n_chunks, initial=_finished_chunks(output_dir, _BUILD) + _finished_chunks(output_dir, _PRODUCTION),
                       unit="chunk", desc="metadynamics", disable=not progress)
    bias = _build(base, dihedrals, settings, start, output_dir, bar)
    _produce(base, dihedrals, settings, bias, output_dir, bar)
    bar.close()
    return load_metadynamics(output_dir)


def _build(base, dihedrals, settings, start, output_dir, bar):
    """The build phase, chunk by chunk; returns the final bias grid (kJ/mol)."""
    from openmm.app import Metadynamics

    n_chunks = settings["n_chunks"]
    done = _finished_chunks(output_dir, _BUILD)
    if done >= n_chunks:
        with np.load(_chunk_path(output_dir, _BUILD, n_chunks - 1)) as data:
            return np.array(data["bias"])
    chunk_steps = settings["build_steps"] // n_chunks
    bias_dir = os.path.join(output_dir, "bias")  # OpenMM's metadynamics loads the bias found there when it is created
    os.makedirs(bias_dir, exist_ok=True)
    for old in glob.glob(os.path.join(bias_dir, "*.npy")):
        os.remove(old)
    if done:
        with np.load(_chunk_path(output_dir, _BUILD, done - 1)) as data:
            np.save(os.path.join(bias_dir, "bias_0_1.npy"), np.array(data["bias"]))  # picked up as another walker's bias
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(base))
    meta = Metadynamics(system, _bias_variables(dihedrals, settings), settings["temperature_K"] * unit.kelvin,
                        settings["bias_factor"], settings["height_kJ_per_mol"] * unit.kilojoule_per_mole,
                        settings["deposit_interval"], saveFrequency=settings["build_steps"], biasDir=bias_dir)
    context, integrator = _new_context(system, settings, settings["seed"] * 1009 + done)
    simulation = _Stepper(context, integrator)
    if done:
        context.setState(openmm.XmlSerializer.deserialize(_load_chunk_state(_chunk_path(output_dir, _BUILD, done - 1))))
    else:
        context.setPositions([openmm.Vec3(*map(float, p)) for p in start])
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=500)
        context.setVelocitiesToTemperature(settings["temperature_K"] * unit.kelvin, settings["seed"])
        integrator.step(settings["equilibration_steps"])
    gamma = settings["bias_factor"]
    for c in range(done, n_chunks):
        meta.step(simulation, chunk_steps)
        bias = -np.asarray(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)) * (gamma - 1) / gamma
        _check_finite(context, "build", c)
        with atomic_write(_chunk_path(output_dir, _BUILD, c), "wb") as f:
            np.savez(f, bias=bias, state=np.array(_state_xml(context)))
        bar.update(1)
    return bias


class _Stepper:
    """The two things ``Metadynamics.step`` asks of an ``openmm.app.Simulation``: ``step`` and
    ``currentStep`` (counted from 0 in each process: deposits fall every ``frequency`` steps)."""

    def __init__(self, context, integrator):
        self.context, self.integrator, self.currentStep = context, integrator, 0

    def step(self, n):
        self.integrator.step(int(n))
        self.currentStep += int(n)


def _check_finite(context, phase, c):
    xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    if not np.isfinite(xyz).all() or np.ptp(xyz, axis=0).max() > 10.0:
        raise RuntimeError(f"the metadynamics {phase} phase blew up in chunk {c} (non-finite or exploding coordinates): use a "
                           "smaller time step (--timestep-fs), a heavier hydrogen mass (--hydrogen-mass) or lower Gaussians (--height)")


def _produce(base, dihedrals, settings, bias, output_dir, bar):
    """The production phase under the frozen bias, chunk by chunk."""
    n_chunks = settings["n_chunks"]
    done = _finished_chunks(output_dir, _PRODUCTION)
    if done >= n_chunks:
        return
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(base))
    force = _frozen_bias_force(dihedrals, settings, bias)
    free = set(range(32)) - {f.getForceGroup() for f in system.getForces()}
    force.setForceGroup(max(free))
    system.addForce(force)
    context, integrator = _new_context(system, settings, settings["seed"] * 1009 + 500 + done)
    previous = _chunk_path(output_dir, _PRODUCTION, done - 1) if done else _chunk_path(output_dir, _BUILD, n_chunks - 1)
    context.setState(openmm.XmlSerializer.deserialize(_load_chunk_state(previous)))
    n_frames = settings["n_steps"] // settings["report_interval"] // n_chunks
    n_atoms = system.getNumParticles()
    for c in range(done, n_chunks):
        xyz = np.empty((n_frames, n_atoms, 3), dtype=np.float32)
        bias_kJ = np.empty(n_frames)
        for f in range(n_frames):
            integrator.step(settings["report_interval"])
            state = context.getState(getPositions=True, getEnergy=True, groups={force.getForceGroup()})
            xyz[f] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            bias_kJ[f] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        _check_finite(context, "production", c)
        with atomic_write(_chunk_path(output_dir, _PRODUCTION, c), "wb") as fh:
            np.savez(fh, positions=xyz, bias=bias_kJ, dihedrals=compute_dihedrals(xyz, dihedrals), state=np.array(_state_xml(context)))
        bar.update(1)


def load_metadynamics(output_dir):
    """Read a finished :func:`run_metadynamics` run."""
    with open(os.path.join(output_dir, "settings.json")) as f:
        settings = json.load(f)
    n_chunks = settings["n_chunks"]
    done = _finished_chunks(output_dir, _PRODUCTION)
    if done < n_chunks:
        raise FileNotFoundError(f"{done} of {n_chunks} production chunks in {output_dir} are finished; run run_metadynamics "
                                "(or `arbg metadynamics`) again with the same settings to finish them")
    parts = {"positions": [], "bias": [], "dihedrals": []}
    for c in range(n_chunks):
        with np.load(_chunk_path(output_dir, _PRODUCTION, c)) as data:
            for key in parts:
                parts[key].append(np.array(data[key]))
    with np.load(_chunk_path(output_dir, _BUILD, n_chunks - 1)) as data:
        grid = np.array(data["bias"])
    return MetadynamicsResult(settings, np.concatenate(parts["dihedrals"]), np.concatenate(parts["bias"]),
                              np.concatenate(parts["positions"]), grid)


class MetadynamicsResult:
    """Frames of MD under a frozen bias, and their unbiased populations.

    Attributes
    ----------
    settings : dict
    dihedrals : numpy.ndarray (n_frames, n_dihedrals), rad
        The biased dihedrals of every production frame.
    bias : numpy.ndarray (n_frames,), kJ/mol
        The frozen bias energy of every frame (from the Context).
    positions : numpy.ndarray (n_frames, n_atoms, 3), nm
    bias_grid : numpy.ndarray, kJ/mol
        The frozen bias on its grid (last dihedral first, as OpenMM tabulates it).
    """

    def __init__(self, settings, dihedrals, bias, positions, bias_grid):
        self.settings = settings
        self.dihedrals = np.asarray(dihedrals, dtype=float)
        self.bias = np.asarray(bias, dtype=float)
        self.positions = positions
        self.bias_grid = np.asarray(bias_grid, dtype=float)
        if len(self.bias) < 4:
            raise ValueError(f"{len(self.bias)} production frames are too few to estimate anything; run longer (n_steps)")

    def log_weights(self):
        """Unbiased log weights of the frames, ``V(s)/kT`` normalised to log-sum 0."""
        from scipy.special import logsumexp

        log_w = self.bias / kT_kJ_per_mol(self.settings["temperature_K"])
        return log_w - logsumexp(log_w)

    def effective_fraction(self):
        """Kish effective sample size of the weights over the number of frames (before time
        correlation): how much of the run the reweighting keeps."""
        w = np.exp(self.log_weights())
        return float(1.0 / np.sum(w**2) / len(w))

    def probability(self, indicator):
        """Unbiased probability of a region, with its standard error.

        The estimate is ``sum w a / sum w`` (``a`` the indicator, ``w`` the weights); its variance is
        that of the linearised series ``y_t = w_t (a_t - P) / mean(w)`` times pymbar's statistical
        inefficiency of ``y``, over the number of frames.

        Parameters
        ----------
        indicator : callable or numpy.ndarray
            Maps dihedral values (n, n_dihedrals) in rad to a bool array (n,), or is that array.

        Returns
        -------
        (float, float)
            The error is NaN when no frame, or every frame, lies in the region.
        """
        from pymbar import timeseries

        a = np.asarray(indicator(self.dihedrals) if callable(indicator) else indicator, dtype=float)
        if a.shape != self.bias.shape:
            raise ValueError(f"the indicator must give one value per frame ({len(self.bias)}); got shape {a.shape}")
        if not a.any() or a.all():
            return float(a.all()), math.nan
        w = np.exp(self.log_weights())
        p = float(np.sum(w * a))
        y = w * (a - p) * len(w)
        g = timeseries.statistical_inefficiency(y) if np.ptp(y) > 0 else 1.0
        return p, float(math.sqrt(g * np.var(y) / len(y)))

    def free_energy(self, indicator):
        """``F(region) - F(rest)`` in kT, with its standard error."""
        return free_energy_from_probability(*self.probability(indicator))

    def halves(self):
        """The first and the second half of the production frames, as two results: equal
        populations from both (within errors) are the check that the run has mixed."""
        h = len(self.bias) // 2
        return [MetadynamicsResult(self.settings, self.dihedrals[s], self.bias[s], self.positions[s], self.bias_grid)
                for s in (slice(None, h), slice(h, None))]

    def region_free_energies(self, names):
        """Probabilities and free energies of the built-in regions of the biased dihedrals
        (:func:`~openmm_arbg.analysis.observables.dihedral_regions`); see
        :meth:`state_free_energies` for the dict returned."""
        return {name: self._population(indicator) for name, indicator in dihedral_regions(names).items()}

    def state_free_energies(self, states, topology):
        """Unbiased populations of states defined on positions (expressions, callables or
        discovered states, as :func:`~openmm_arbg.analysis.states.state_populations` takes them).

        Returns
        -------
        dict
            State name -> dict with ``probability``, ``probability_error``, ``free_energy_kT``
            (``F(state) - F(rest)``), ``free_energy_error_kT``, ``frames`` (frames in the state)
            and ``entries`` (:meth:`entries`).
        """
        from ..analysis.states import state_indicators

        return {name: self._population(mask) for name, mask in state_indicators(states, self.positions, topology).items()}

    def _population(self, indicator):
        mask = np.asarray(indicator(self.dihedrals) if callable(indicator) else indicator, dtype=bool)
        p, dp = self.probability(mask)
        f, df = free_energy_from_probability(p, dp)
        return dict(probability=p, probability_error=dp, free_energy_kT=f, free_energy_error_kT=df, frames=int(mask.sum()),
                    entries=self.entries(mask))

    @staticmethod
    def entries(mask):
        """How many times the run entered a region (frames ``mask`` False then True), counting a
        start inside as one. An error bar over a handful of entries is itself unreliable: the
        population rests on few independent visits."""
        mask = np.asarray(mask, dtype=bool)
        return int(mask[:1].sum() + np.sum(mask[1:] & ~mask[:-1]))

    def summary(self, names, command=None):
        """What was run and the built-in regions' populations (the ``result.json`` of ``arbg metadynamics``)."""
        s = self.settings
        out = dict(
            system=s.get("system"), temperature_K=s["temperature_K"], method=s["method"],
            build_ps=s["build_steps"] * s["timestep_fs"] / 1e3, production_ps=s["n_steps"] * s["timestep_fs"] / 1e3,
            frames=len(self.bias), bias_factor=s["bias_factor"], hydrogen_mass_Da=s.get("hydrogen_mass_Da"),
            largest_bias_kJ_per_mol=float(self.bias_grid.max() - self.bias_grid.min()),
            weights_effective_fraction=self.effective_fraction(),
        )
        if command is not None:
            out["command"] = command
        out.update(self.region_free_energies(names))
        return out


def pool_runs(results, names=(), states=None, topology=None):
    """Populations pooled over independent runs of one molecule (other seeds, equal lengths).

    Each run's error counts the time correlation of what it sampled; a slow coordinate it did not
    bias, or bias-weight spikes that pymbar's statistical inefficiency underrates, make the runs
    scatter more than those errors say. The pooled probability is the mean of the runs' and its
    error the larger of two: from their reported errors, ``sqrt(sum dp_i^2) / n``, and from their
    scatter, ``std(p_i) / sqrt(n)``. ``dispersion`` is the scatter over what the errors predict
    (``chi^2 / (n - 1)`` about the mean: about 1 when the errors are right, NaN with fewer than 2
    runs or an undefined error).

    Parameters
    ----------
    results : list of MetadynamicsResult
        Runs of the same System, temperature and biased dihedrals.
    names : list of str
        Names of the biased dihedrals, for the built-in regions (:meth:`MetadynamicsResult.region_free_energies`).
    states, topology : optional
        States on positions, as :meth:`MetadynamicsResult.state_free_energies` takes them.

    Returns
    -------
    dict
        Region or state name -> dict with ``probability``, ``probability_error``, ``free_energy_kT``,
        ``free_energy_error_kT``, ``runs`` and ``run_errors`` (each run's probability and error)
        and ``dispersion``.
    """
    results = list(results)
    if not results:
        raise ValueError("give at least one run to pool")
    for key in ("system_sha256", "temperature_K", "dihedrals"):
        values = {json.dumps(r.settings.get(key)) for r in results}
        if len(values) > 1:
            raise ValueError(f"the runs differ in {key} ({', '.join(sorted(values))}): pool only runs of the same molecule, "
                             "temperature and biased dihedrals")
    per_run = [{**r.region_free_energies(names), **(r.state_free_energies(states, topology) if states else {})} for r in results]
    out = {}
    n = len(results)
    for name in per_run[0]:
        p = np.array([x[name]["probability"] for x in per_run])
        e = np.array([x[name]["probability_error"] for x in per_run])
        mean = float(p.mean())
        reported = float(np.sqrt(np.sum(e**2)) / n) if np.isfinite(e).all() else math.nan
        scatter = float(p.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        error = float(np.nanmax([reported, scatter])) if np.isfinite([reported, scatter]).any() else math.nan
        dispersion = float(np.sum(((p - mean) / e) ** 2) / (n - 1)) if n > 1 and np.isfinite(e).all() and (e > 0).all() else math.nan
        f, df = free_energy_from_probability(mean, error)
        out[name] = dict(probability=mean, probability_error=error, free_energy_kT=f, free_energy_error_kT=df, runs=p.tolist(),
                         run_errors=e.tolist(), dispersion=dispersion)
    return out
