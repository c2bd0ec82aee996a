"""Unconstrained Langevin MD that writes training data: resumable, with a progress bar.

Output folder layout (one folder per temperature)::

    topology.pdb        the molecule (mdtraj reads trajectory.dcd with it)
    trajectory.dcd      frames, written when the run completes
    settings.json       what was run, and how far it got
    state.xml           OpenMM state of the last completed chunk (for resuming)
    chunks/             frames of completed chunks until the run completes
"""

import json
import math
import numbers
import os
import sys

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from ..physics import check_platform, check_temperature, default_platform, platform_properties, system_fingerprint
from ..utils import atomic_write, check_settings_file, file_sha256, load_trajectory, progress_bar, write_json_atomic

__all__ = ["run_md", "md_settings", "md_provenance", "chirality_restrained", "choose_start_frames", "basin_starts", "rotate_dihedrals", "RAMACHANDRAN_BASINS", "CHI1_ROTAMERS", "load_md", "steps_from_ps", "langevin_settings", "langevin_integrator"]


def steps_from_ps(duration_ps, report_ps, timestep_fs, what="the run"):
    """MD steps and steps between frames from times in ps; the run is a whole number of frames.

    Raises ``ValueError`` (naming ``what``) if the run is shorter than one frame interval.
    """
    n_steps = int(round(duration_ps * 1e3 / timestep_fs))
    report = int(round(report_ps * 1e3 / timestep_fs))
    if report <= 0:
        raise ValueError(f"the frame interval ({report_ps} ps) is shorter than one time step ({timestep_fs} fs)")
    n_steps -= n_steps % report
    if n_steps <= 0:
        raise ValueError(f"{what} is shorter than one frame interval ({report_ps} ps)")
    return n_steps, report


def langevin_settings(
    molecular_system, n_steps, report_interval, equilibration_steps, temperature, timestep_fs, friction_per_ps, seed, platform
):
    """The settings of a Langevin run as stored in its ``settings.json`` (checked, with defaults
    filled in: the system's temperature, the default platform)."""
    n_steps, report_interval = int(n_steps), int(report_interval)
    if n_steps <= 0 or report_interval <= 0 or n_steps % report_interval:
        raise ValueError(f"n_steps ({n_steps}) must be a positive multiple of report_interval ({report_interval})")
    T = molecular_system.temperature.value_in_unit(unit.kelvin) if temperature is None else check_temperature(temperature)
    for name, value, lowest in (("timestep_fs", timestep_fs, None), ("friction_per_ps", friction_per_ps, 0.0)):
        ok = isinstance(value, numbers.Real) and math.isfinite(value) and (value > 0 if lowest is None else value >= lowest)
        if not ok:
            raise ValueError(f"{name} must be a " + ("positive number" if lowest is None else "number >= 0") + f"; got {value!r}")
    if int(equilibration_steps) < 0:
        raise ValueError(f"equilibration_steps must be >= 0; got {equilibration_steps!r}")
    check_platform(platform)
    return dict(
        system=molecular_system.name,
        system_sha256=system_fingerprint(molecular_system.system),
        n_atoms=molecular_system.n_atoms,
        temperature_K=T,
        n_steps=n_steps,
        report_interval=report_interval,
        equilibration_steps=int(equilibration_steps),
        timestep_fs=float(timestep_fs),
        friction_per_ps=float(friction_per_ps),
        seed=int(seed),
        platform=platform or default_platform(molecular_system.n_atoms, molecular_system.system, molecular_system.positions),
    )


def resumed_platform(platform, output_dir):
    """``platform``, or when it is None the platform stored in ``output_dir/settings.json`` by the
    run being resumed (None for a new run): a speed test on a busy machine may choose another
    platform, which the settings check would refuse as another setting."""
    if platform is not None:
        return platform
    try:
        with open(os.path.join(output_dir, "settings.json")) as f:
            return json.load(f).get("platform")
    except (OSError, ValueError, AttributeError):
        return None


def langevin_integrator(settings, seed):
    """``LangevinMiddleIntegrator`` for :func:`langevin_settings` (temperature, friction, time step)."""
    integrator = openmm.LangevinMiddleIntegrator(
        settings["temperature_K"] * unit.kelvin, settings["friction_per_ps"] / unit.picosecond, settings["timestep_fs"] * unit.femtosecond
    )
    integrator.setRandomNumberSeed(int(seed))
    return integrator


def run_md(molecular_system, output_dir, n_steps, report_interval=100, temperature=None, timestep_fs=1.0,
           friction_per_ps=1.0, seed=0, platform=None, chunk_frames=1000, equilibration_steps=10000, progress=True, out=None,
           start_positions=None):
    """Run Langevin MD and write frames every ``report_interval`` steps; resume if possible.

    With ``start_positions``, the run is ``len(start_positions)`` independent segments of equal
    length ("seeded" MD), each started from one structure: minimised, given velocities at the
    temperature, equilibrated for ``equilibration_steps``, then run for ``n_steps / n_starts``
    steps. Seeded from frames of a high-temperature run (:func:`choose_start_frames`), this puts
    target-temperature frames into basins the target-temperature run never reached: training
    data for them without umbrella sampling. Their frames are not Boltzmann-weighted across
    basins (each basin gets what its segments give it); importance sampling corrects that.

    Parameters
    ----------
    molecular_system : openmm_arbg.systems.MolecularSystem
    output_dir : str
    n_steps : int
        Production steps (after ``equilibration_steps``).
    report_interval : int
        Steps between saved frames.
    temperature : float, K, optional
        Default: the system's temperature.
    timestep_fs : float
        Time step in fs. Systems are unconstrained: keep it at 1 fs (or repartition hydrogen mass).
    friction_per_ps : float
    seed : int
    platform : str, optional
        OpenMM platform name; by default the fastest for the System in a short speed test.
    chunk_frames : int
        Frames per saved chunk (the resume granularity).
    equilibration_steps : int
        Steps of dynamics before the first saved frame (of every segment, with ``start_positions``).
    progress : bool
        Show a progress bar (plain log lines when stderr is not a terminal).
    out : file, optional
        Where notices about resuming and restarting go (default stdout).
    start_positions : array_like (n_starts, n_atoms, 3), nm, optional
        Starting structures of seeded MD (see above); ``n_steps`` must be a multiple of
        ``n_starts * report_interval``. Each segment is one saved chunk (``chunk_frames`` is ignored).

    Files: the run never overwrites a ``trajectory.dcd``, ``topology.pdb`` or ``state.xml`` it
    did not write (a folder with one of them and no ``settings.json`` is refused; a
    ``trajectory.dcd`` whose SHA-256 is not the one recorded in ``settings.json`` is refused). A
    complete run whose ``trajectory.dcd`` was deleted runs again from the start, as does one whose
    saved chunks or state are missing. A resumed run is complete and consistent but not
    bit-identical to an uninterrupted one (it continues with new random numbers).

    Returns
    -------
    mdtraj.Trajectory
    """
    import mdtraj

    if molecular_system.system.getNumConstraints() > 0:
        raise ValueError("training MD must be unconstrained; build the system with constraints=None")
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, numbers.Integral) or chunk_frames < 1:
        raise ValueError(f"chunk_frames must be a positive integer; got {chunk_frames!r}")
    if platform is None:  # the platform a run started on (chosen by a speed test) is the one it resumes on
        platform = _stored(os.path.join(output_dir, "settings.json")).get("platform")
    settings = langevin_settings(
        molecular_system, n_steps, report_interval, equilibration_steps, temperature, timestep_fs, friction_per_ps, seed, platform
    )
    if start_positions is not None:
        start_positions = np.asarray(start_positions, dtype=float)
        if start_positions.ndim != 3 or start_positions.shape[1:] != (molecular_system.n_atoms, 3) or not len(start_positions):
            raise ValueError(
                f"start_positions must have shape (n_starts, {molecular_system.n_atoms}, 3) for {molecular_system.name}; "
                f"got {start_positions.shape}"
            )
        if not np.isfinite(start_positions).all():
            raise ValueError("start_positions hold NaN or infinite coordinates")
        n_starts = len(start_positions)
        if (n_steps // report_interval) % n_starts:
            raise ValueError(
                f"seeded MD splits the run's {n_steps // report_interval} frames evenly over {n_starts} starts: "
                "choose a length (or frame interval) whose frame count is a multiple of the number of starts"
            )
        chunk_frames = n_steps // report_interval // n_starts
        settings["n_starts"] = n_starts
        settings["starts_sha256"] = _array_sha256(start_positions)
    settings["chunk_frames"] = chunk_frames
    T, n_steps, report_interval, platform = settings["temperature_K"], settings["n_steps"], settings["report_interval"], settings["platform"]
    settings_path = os.path.join(output_dir, "settings.json")
    pdb_path = os.path.join(output_dir, "topology.pdb")
    dcd_path = os.path.join(output_dir, "trajectory.dcd")
    state_path = os.path.join(output_dir, "state.xml")
    _check_own_files(output_dir, settings_path, dcd_path, pdb_path, state_path)
    os.makedirs(os.path.join(output_dir, "chunks"), exist_ok=True)
    old = check_settings_file(settings_path, settings, "an MD run", optional_keys=("system_sha256",))
    done = dict(completed_chunks=old.get("completed_chunks", 0), complete=old.get("complete", False))
    if "trajectory_sha256" in old:
        done["trajectory_sha256"] = old["trajectory_sha256"]
    if done["complete"] and os.path.exists(dcd_path):
        return load_trajectory(dcd_path, top=pdb_path)
    n_frames = n_steps // report_interval
    n_chunks = -(-n_frames // chunk_frames)
    if done["complete"]:
        print(f"{dcd_path} of this complete run was deleted: running it again from the start", file=out or sys.stdout)
        done = dict(completed_chunks=0, complete=False)
    elif done["completed_chunks"] > 0:
        missing = [c for c in range(done["completed_chunks"]) if not _chunk_readable(output_dir, c)] or (
            [] if os.path.exists(state_path) else ["state.xml"])
        if missing:
            print(f"{output_dir}: saved chunks or state are missing or damaged ({', '.join(map(str, missing[:5]))}): "
                  "running again from the start", file=out or sys.stdout)
            done["completed_chunks"] = 0
    write_json_atomic(settings_path, dict(settings, **done))
    with atomic_write(pdb_path) as f:
        app.PDBFile.writeFile(molecular_system.topology, molecular_system.positions, f)

    # a resumed run continues with new random numbers: an integrator's seed counts only when its
    # Context is created
    integrator = langevin_integrator(settings, int(seed) + 1 + 7919 * done["completed_chunks"])
    system, stereo = molecular_system.system, None
    if start_positions is not None:  # rotated or hot starts can clash: hold handedness while they relax
        system, stereo = chirality_restrained(molecular_system)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform),
                             platform_properties(platform))  # CPU: OPENMM_CPU_THREADS (--threads) threads, 1 by default: reproducible

    def start_from(positions, velocity_seed):
        """Minimise, draw velocities at T, equilibrate: the start of a run or of a seeded segment
        (seeded: with every stereocentre held to the reference's handedness, released after)."""
        context.setPositions(positions)
        if stereo is not None:
            context.setParameter(CHIRALITY_RESTRAINT, CHIRALITY_RESTRAINT_KJ_PER_MOL)
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
        context.setVelocitiesToTemperature(T * unit.kelvin, velocity_seed)
        integrator.step(int(equilibration_steps))
        if stereo is not None:
            context.setParameter(CHIRALITY_RESTRAINT, 0.0)

    if start_positions is not None:  # seeded: every chunk starts afresh from its own structure (below)
        if done["completed_chunks"] > 0:
            print(f"resuming {output_dir}: {done['completed_chunks']} of {n_chunks} seeded segments done", file=out or sys.stdout)
    elif done["completed_chunks"] > 0:
        with open(state_path) as f:
            context.setState(openmm.XmlSerializer.deserialize(f.read()))
        print(f"resuming {output_dir}: {min(done['completed_chunks'] * chunk_frames, n_frames)} of {n_frames} frames done",
              file=out or sys.stdout)
    else:
        start_from(molecular_system.positions, int(seed) + 2)

    bar = progress_bar(
        total=n_frames,
        initial=min(done["completed_chunks"] * chunk_frames, n_frames),
        unit="frame",
        desc=f"MD {molecular_system.name} {T:g} K",
        disable=not progress,
    )
    for chunk in range(done["completed_chunks"], n_chunks):
        frames_here = min(chunk_frames, n_frames - chunk * chunk_frames)
        if start_positions is not None:
            start_from(start_positions[chunk] * unit.nanometer, int(seed) + 2 + chunk)
        xyz = np.empty((frames_here, molecular_system.n_atoms, 3), dtype=np.float32)
        for i in range(frames_here):
            integrator.step(report_interval)
            xyz[i] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            bar.update(1)
        if not np.isfinite(xyz).all():
            raise RuntimeError(f"MD blew up in chunk {chunk} (NaN positions); use a smaller time step")
        if stereo is not None and not stereo.check(xyz).all():
            raise RuntimeError(
                f"seeded MD segment {chunk} holds frames with a stereocentre of the other handedness than "
                f"{molecular_system.name}'s structure: its start clashes so badly that relaxing it inverted a centre "
                "even under the chirality restraint. Run the seeded MD again with another --seed in a new --output "
                "folder (these frames would fail arbg train's handedness check)")
        with atomic_write(os.path.join(output_dir, "chunks", f"chunk_{chunk:06d}.npy"), "wb") as f:
            np.save(f, xyz)
        state = context.getState(getPositions=True, getVelocities=True)
        with atomic_write(state_path) as f:
            f.write(openmm.XmlSerializer.serialize(state))
        done["completed_chunks"] = chunk + 1
        write_json_atomic(settings_path, dict(settings, **done))
    bar.close()

    xyz = np.concatenate([np.load(os.path.join(output_dir, "chunks", f"chunk_{c:06d}.npy")) for c in range(n_chunks)])
    top = mdtraj.Topology.from_openmm(molecular_system.topology)
    traj = mdtraj.Trajectory(xyz, top)
    traj.time = np.arange(1, len(xyz) + 1) * report_interval * timestep_fs * 1e-3  # ps
    with atomic_write(dcd_path, mode=None) as tmp:
        traj.save_dcd(tmp)
        done["trajectory_sha256"] = file_sha256(tmp)  # recorded before the rename: the file is known as ours
        write_json_atomic(settings_path, dict(settings, **done))
    done["complete"] = True
    write_json_atomic(settings_path, dict(settings, **done))
    for c in range(n_chunks):
        os.remove(os.path.join(output_dir, "chunks", f"chunk_{c:06d}.npy"))
    return traj


#: Global parameter of :func:`chirality_restrained`'s restraint (kJ/mol; 0 switches it off).
CHIRALITY_RESTRAINT = "k_chirality"
#: Its strength while a seeded start is minimised and equilibrated: a planar centre costs a quarter
#: of it (2 500 kJ/mol), more than any clash the minimiser could relieve by inverting the centre.
CHIRALITY_RESTRAINT_KJ_PER_MOL = 1.0e4


def chirality_restrained(molecular_system):
    """A copy of the System with a restraint that holds every stereocentre's handedness, and the
    checker of that handedness.

    The restraint is ``k * min(0, s * sin(theta) - 1/2)**2`` on the improper dihedral ``theta`` of
    each stereocentre and its first three substituents (canonical order), ``s`` its sign in the
    system's own structure: zero for tetrahedral centres of the right hand (``|theta|`` about
    105-135 degrees) and rising through a planar centre. ``k`` is the global parameter
    :data:`CHIRALITY_RESTRAINT`, 0 by default, so with it off the System's energies and forces are
    the original's. Seeded MD switches it on while a start is minimised and equilibrated: a start
    whose side chains were rotated into each other, or a frame of a hot run, otherwise relaxes by
    pushing an atom through its centre (Thr CB of chignolin in about one start in twenty).

    Parameters
    ----------
    molecular_system : openmm_arbg.systems.MolecularSystem

    Returns
    -------
    system : openmm.System
        The copy (the original if the molecule has no stereocentre).
    stereo : StereoChecker or None
        Handedness of the system's structure recorded (None without stereocentres).
    """
    import copy

    from ..analysis.observables import dihedrals
    from ..molecule.stereochemistry import StereoChecker

    stereo = StereoChecker(molecular_system.topology)
    if not stereo.centers:
        return molecular_system.system, None
    reference = molecular_system.positions_nm()
    stereo.record(reference)
    quads = [[sub[0], c, sub[1], sub[2]] for c, sub in zip(stereo.centers, stereo.substituents)]
    sides = np.sign(np.sin(dihedrals(reference, quads)[0]))
    system = copy.deepcopy(molecular_system.system)
    force = openmm.CustomTorsionForce(f"{CHIRALITY_RESTRAINT}*min(0, s*sin(theta) - 0.5)^2")
    force.addGlobalParameter(CHIRALITY_RESTRAINT, 0.0)
    force.addPerTorsionParameter("s")
    for quad, side in zip(quads, sides):
        force.addTorsion(*(int(i) for i in quad), [float(side)])
    force.setName("chirality restraint (openmm-arbg seeded MD)")
    system.addForce(force)
    return system, stereo


def md_settings(trajectory):
    """The ``settings.json`` that ``arbg md`` wrote beside ``trajectory`` (``{}`` if none)."""
    return _stored(os.path.join(os.path.dirname(os.path.abspath(trajectory)), "settings.json"))


def md_provenance(trajectory):
    """What an ``arbg md`` run beside ``trajectory`` simulated, from its ``settings.json``:
    ``{"system", "system_sha256", "temperature_K"}``, or None where there is no such file."""
    s = md_settings(trajectory)
    try:
        return dict(system=str(s["system"]), system_sha256=str(s["system_sha256"]), temperature_K=float(s["temperature_K"]))
    except (KeyError, TypeError, ValueError):
        return None


def choose_start_frames(positions, topology, n_starts, seed=0):
    """Frames that cover the backbone conformations of a trajectory: starts for seeded MD.

    k-means (deeptime) with ``n_starts`` clusters on the cosines and sines of every backbone
    phi and psi; from each cluster, the frame nearest its centre. Run on a high-temperature
    trajectory, where nothing is rare, this spreads the starts over every basin it visited,
    whatever their Boltzmann weights at the target temperature.

    Parameters
    ----------
    positions : array_like (n_frames, n_atoms, 3), nm
    topology : mdtraj.Topology or openmm.app.Topology
        A molecule with at least one backbone phi or psi.
    n_starts : int
        Number of starts (at most the number of frames).
    seed : int

    Returns
    -------
    numpy.ndarray of int, shape (n_starts,)
        Frame indices, one per cluster, sorted.
    """
    from deeptime.clustering import KMeans
    from scipy.spatial import cKDTree

    from ..analysis.evaluation import dihedral_features

    positions = np.asarray(positions, dtype=float)
    if isinstance(n_starts, bool) or not isinstance(n_starts, numbers.Integral) or n_starts < 1:
        raise ValueError(f"n_starts must be a positive integer; got {n_starts!r}")
    if n_starts > len(positions):
        raise ValueError(f"{n_starts} starts asked for from {len(positions)} frames: give a longer trajectory or fewer starts")
    features = dihedral_features(positions, topology)
    if features.shape[1] == 0:
        raise ValueError("the molecule has no backbone phi or psi to cluster seeded-MD starts on")
    clustering = KMeans(n_clusters=int(n_starts), init_strategy="kmeans++", fixed_seed=int(seed) % 2**31, n_jobs=1)
    centers = clustering.fit(features).fetch_model().cluster_centers
    chosen = np.unique(cKDTree(features).query(centers)[1])  # the frame nearest each centre
    if len(chosen) < n_starts:  # two centres nearest the same frame: add the farthest frames from those chosen
        gap = cKDTree(features[chosen]).query(features)[0]
        for _ in range(n_starts - len(chosen)):
            new = int(gap.argmax())
            chosen = np.sort(np.append(chosen, new))
            gap = np.minimum(gap, np.sqrt(((features - features[new]) ** 2).sum(-1)))
    return chosen


def left_handed_starts(positions, topology, chosen):
    """Per residue, how many chosen starts and how many frames have 0 < phi < 120 degrees
    (alpha_L and nearby): seeding gives the model only the basins the start trajectory visited,
    and a short hot run can miss this one.

    Parameters
    ----------
    positions : array_like (n_frames, n_atoms, 3), nm
        The start trajectory.
    topology : mdtraj.Topology or openmm.app.Topology
    chosen : array_like of int
        Frame indices of the starts (:func:`choose_start_frames`).

    Returns
    -------
    dict
        ``phiK`` (the state language's names) -> (starts in the region, frames in the region).
    """
    from ..analysis.observables import dihedrals
    from ..molecule.topology import named_dihedrals

    named = {k: v for k, v in named_dihedrals(topology).items() if k.startswith("phi") and k[3:].isdigit()}
    phi = dihedrals(positions, list(named.values()))
    left = (phi > 0) & (phi < np.radians(120))
    chosen = np.asarray(chosen, dtype=int)
    return {name: (int(left[chosen, k].sum()), int(left[:, k].sum())) for k, name in enumerate(named)}


#: Ramachandran basins of seeded MD's rotated starts, (phi, psi) in degrees: the right-handed
#: helix, the beta sheet, the polyproline II helix, the left-handed helix and C7ax/gamma, so that
#: every residue starts in each basin whether or not any MD visited it.
RAMACHANDRAN_BASINS = {
    "alpha_R": (-65.0, -40.0),
    "beta": (-120.0, 130.0),
    "PII": (-70.0, 145.0),
    "alpha_L": (60.0, 45.0),
    "C7ax": (70.0, -65.0),
}

#: Side-chain chi1 rotamers of seeded MD's rotated starts, in degrees, named as in Lovell et al.
#: (Proteins 2000): p (plus), t (trans), m (minus). A rotamer barrier (about 15-25 kJ/mol) is crossed
#: a few times per nanosecond or less at 310 K, so MD of training length can stay in the rotamer it
#: started in: Ace-Ile-Nme kept chi1 gauche for 1.5 ns.
CHI1_ROTAMERS = {"p": 60.0, "t": 180.0, "m": -60.0}


def _side_of_bond(neighbors, b, c):
    """Atoms reachable from ``c`` without crossing the bond b-c (None if b-c is in a ring)."""
    seen, stack = {c}, [c]
    while stack:
        i = stack.pop()
        for j in neighbors[i]:
            if i == c and j == b:
                continue
            if j == b:
                return None
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return np.array(sorted(seen))


def rotate_dihedrals(positions_nm, neighbors, dihedrals, targets):
    """Set each dihedral to its target by rigidly rotating the atoms on one side of its central
    bond: bond lengths, angles, the other dihedrals' values and every stereocentre are unchanged.

    Parameters
    ----------
    positions_nm : array_like (n_atoms, 3), nm
    neighbors : list of list of int
        Bonded neighbours of each atom (``MolecularGraph.neighbors``).
    dihedrals : sequence of (a, b, c, d)
        Atom quadruples; the atoms on ``c``'s side of the bond b-c move.
    targets : sequence of float, rad

    Returns
    -------
    numpy.ndarray (n_atoms, 3), nm
        A dihedral whose central bond is in a ring (proline's phi) is left as it was.
    """
    from ..analysis.observables import dihedrals as compute_dihedrals

    x = np.array(positions_nm, dtype=float)
    for (a, b, c, d), target in zip(dihedrals, targets):
        moving = _side_of_bond(neighbors, b, c)
        if moving is None:
            continue  # a ring bond: cannot be rotated rigidly
        current = compute_dihedrals(x, [[a, b, c, d]])[0, 0]
        angle = float(target - current)
        axis = (x[c] - x[b]) / np.linalg.norm(x[c] - x[b])
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
        x[moving] = (x[moving] - x[c]) @ rot.T + x[c]
    return x


def _nonlocal_pairs(neighbors, min_bonds=4):
    """Atom pairs (i < j) at least ``min_bonds`` bonds apart (or unconnected): those whose
    distance a rigid rotation about a backbone bond can shrink into a clash."""
    n = len(neighbors)
    near = np.zeros((n, n), dtype=bool)
    for i in range(n):
        frontier, seen = {i}, {i}
        for _ in range(min_bonds - 1):
            frontier = {j for f in frontier for j in neighbors[f]} - seen
            seen |= frontier
        near[i, sorted(seen)] = True
    i, j = np.triu_indices(n, 1)
    keep = ~near[i, j]
    return i[keep], j[keep]


def basin_starts(positions, topology, n_starts, seed=0, jitter_deg=15.0, min_distance_nm=0.15, max_tries=50, rotamers=True):
    """Starts for seeded MD that put every residue into every Ramachandran basin, and every side
    chain into every chi1 rotamer.

    Each start is a structure whose backbone (phi, psi) of each residue is rotated rigidly into one
    of :data:`RAMACHANDRAN_BASINS` (plus a uniform jitter of +-``jitter_deg``). Each residue gets
    every basin equally often (``n_starts`` a multiple of their number) in an order drawn
    independently per residue, so the starts also mix the residues' basins. Unlike frames of a
    high-temperature run (:func:`choose_start_frames`), this covers the left-handed basins
    (alpha_L, C7ax) that a short hot run can miss. With ``rotamers``, every side chain's chi1 is
    likewise rotated into each of :data:`CHI1_ROTAMERS` equally often (``n_starts`` a multiple of
    3 for exactly equal counts), in its own random order: rotamers that MD at the target
    temperature does not cross in its length. Rotations keep bonds, angles and stereocentres;
    of ``max_tries`` jitters a start takes the first whose atoms at least four bonds apart are at
    least ``min_distance_nm`` apart, else the one with the largest such distance. Proline's phi and
    chi1 (ring bonds) are left as they are. The MD minimises and equilibrates each start before
    saving frames. Molecules without a chi1 (Gly, Ala) get the same starts with or without
    ``rotamers``.

    Parameters
    ----------
    positions : array_like (n_atoms, 3) or (n_starts, n_atoms, 3), nm
        One structure for every start, or one per start (for example frames chosen by
        :func:`choose_start_frames`, whose side chains then stay as the hot run left them).
    topology : mdtraj.Topology or openmm.app.Topology
        A molecule with at least one residue that has both a backbone phi and psi.
    n_starts : int
    seed : int
    rotamers : bool
        Also rotate every chi1 into the rotamers.

    Returns
    -------
    starts : numpy.ndarray (n_starts, n_atoms, 3), nm
    basins : dict
        ``"K"`` (residue K, 1-based, as in ``phiK``) -> list of basin names, one per start; with
        ``rotamers``, also ``"chi1_K"`` -> list of rotamer names (:data:`CHI1_ROTAMERS`).
    """
    from ..molecule.topology import MolecularGraph, named_dihedrals, side_chain_dihedrals

    if isinstance(n_starts, bool) or not isinstance(n_starts, numbers.Integral) or n_starts < 1:
        raise ValueError(f"n_starts must be a positive integer; got {n_starts!r}")
    positions = np.asarray(positions, dtype=float)
    if positions.ndim == 2:
        positions = np.broadcast_to(positions, (int(n_starts),) + positions.shape)
    if positions.ndim != 3 or len(positions) != n_starts:
        raise ValueError(f"positions must have shape (n_atoms, 3) or ({n_starts}, n_atoms, 3); got {positions.shape}")
    named = named_dihedrals(topology)
    residues = [k[3:] for k in named if k.startswith("phi") and k[3:].isdigit() and "psi" + k[3:] in named]
    if not residues:
        raise ValueError("the molecule has no residue with both a backbone phi and psi to rotate into basins")
    graph = MolecularGraph.from_topology(topology)
    pair_i, pair_j = _nonlocal_pairs(graph.neighbors)
    names = list(RAMACHANDRAN_BASINS)
    centres = np.radians(np.array([RAMACHANDRAN_BASINS[b] for b in names]))
    rng = np.random.default_rng(seed)
    order = {r: rng.permutation(np.resize(np.arange(len(names)), int(n_starts))) for r in residues}
    quads = [q for r in residues for q in (named["phi" + r], named["psi" + r])]
    chis = {}
    if rotamers:
        chis = {k: v for k, v in side_chain_dihedrals(topology).items()
                if k.startswith("chi1_") and _side_of_bond(graph.neighbors, v[1], v[2]) is not None}  # not Pro's ring
    rot_names = list(CHI1_ROTAMERS)
    rot_centres = np.radians(np.array([CHI1_ROTAMERS[b] for b in rot_names]))
    rot_rng = np.random.default_rng([int(seed), 1])  # its own stream: the backbone's draws are as without rotamers
    rot_order = {k: rot_rng.permutation(np.resize(np.arange(len(rot_names)), int(n_starts))) for k in chis}
    quads += list(chis.values())
    starts = np.empty(positions.shape, dtype=float)
    for s in range(int(n_starts)):
        best, best_gap = None, -np.inf
        for _ in range(int(max_tries)):
            targets = [t for r in residues for t in centres[order[r][s]] + np.radians(rng.uniform(-jitter_deg, jitter_deg, 2))]
            targets += [rot_centres[rot_order[k][s]] + np.radians(rot_rng.uniform(-jitter_deg, jitter_deg)) for k in chis]
            x = rotate_dihedrals(positions[s], graph.neighbors, quads, targets)
            gap = np.linalg.norm(x[pair_i] - x[pair_j], axis=-1).min() if len(pair_i) else np.inf
            if gap > best_gap:
                best, best_gap = x, gap
            if gap >= min_distance_nm:
                break
        starts[s] = best
    basins = {r: [names[b] for b in order[r]] for r in residues}
    basins.update({k: [rot_names[b] for b in rot_order[k]] for k in chis})
    return starts, basins


def _array_sha256(a):
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()


def _stored(path):
    try:
        with open(path) as f:
            stored = json.load(f)
        return stored if isinstance(stored, dict) else {}
    except (OSError, ValueError):
        return {}


def _chunk_readable(output_dir, c):
    try:
        np.load(os.path.join(output_dir, "chunks", f"chunk_{c:06d}.npy"))
        return True
    except Exception:
        return False


def _check_own_files(output_dir, settings_path, dcd_path, pdb_path, state_path):
    """Refuse to run where a result file exists that this tool did not write (see :func:`run_md`)."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"the output folder {output_dir} exists and is not a folder; choose another --output")
    if not os.path.exists(settings_path):
        foreign = [p for p in (dcd_path, pdb_path, state_path) if os.path.lexists(p)]
        if foreign:
            raise ValueError(
                f"{output_dir} holds {', '.join(os.path.basename(p) for p in foreign)} but no settings.json of arbg md, so "
                "they were not written by it and are never overwritten: choose another --output, or move the files away"
            )
        return
    try:
        with open(settings_path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {settings_path} ({exc}); delete it (and the run's files) to start over") from None
    if os.path.exists(dcd_path):
        recorded = stored.get("trajectory_sha256")
        legacy = recorded is None and stored.get("complete")  # written before hashes were recorded
        if not legacy and (recorded is None or file_sha256(dcd_path) != recorded):
            raise ValueError(
                f"{dcd_path} was not written by this run of arbg md (or was changed since; its SHA-256 is not the one in "
                f"{settings_path}); it is never overwritten: move it away, or choose another --output"
            )


def load_md(output_dir, stride=1):
    """Read the trajectory written by :func:`run_md` (mdtraj.Trajectory)."""
    return load_trajectory(os.path.join(output_dir, "trajectory.dcd"), top=os.path.join(output_dir, "topology.pdb"), stride=stride)
