"""Unconstrained Langevin MD that writes training data: resumable, with a progress bar.

Output folder layout (one folder per temperature)::

    topology.pdb        the molecule (mdtraj reads trajectory.dcd with it)
    trajectory.dcd      frames, written when the run completes
    settings.json       what was run, and how far it got
    state.xml           OpenMM state of the last completed chunk (for resuming)
    chunks/             frames of completed chunks until the run completes
"""

import os

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from ..physics import default_platform
from ..utils import atomic_write, check_settings_file, write_json_atomic

__all__ = ["run_md", "load_md", "steps_from_ps", "langevin_settings", "langevin_integrator"]


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
    T = molecular_system.temperature.value_in_unit(unit.kelvin) if temperature is None else float(temperature)
    return dict(
        system=molecular_system.name,
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


def langevin_integrator(settings, seed):
    """``LangevinMiddleIntegrator`` for :func:`langevin_settings` (temperature, friction, time step)."""
    integrator = openmm.LangevinMiddleIntegrator(
        settings["temperature_K"] * unit.kelvin, settings["friction_per_ps"] / unit.picosecond, settings["timestep_fs"] * unit.femtosecond
    )
    integrator.setRandomNumberSeed(int(seed))
    return integrator


def run_md(molecular_system, output_dir, n_steps, report_interval=100, temperature=None, timestep_fs=1.0,
           friction_per_ps=1.0, seed=0, platform=None, chunk_frames=1000, equilibration_steps=10000, progress=True):
    """Run Langevin MD and write frames every ``report_interval`` steps; resume if possible.

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
        OpenMM platform name; Reference for small molecules by default.
    chunk_frames : int
        Frames per saved chunk (the resume granularity).
    equilibration_steps : int
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    mdtraj.Trajectory
    """
    import mdtraj
    from tqdm.auto import tqdm

    if molecular_system.system.getNumConstraints() > 0:
        raise ValueError("training MD must be unconstrained; build the system with constraints=None")
    settings = langevin_settings(
        molecular_system, n_steps, report_interval, equilibration_steps, temperature, timestep_fs, friction_per_ps, seed, platform
    )
    settings["chunk_frames"] = chunk_frames
    T, n_steps, report_interval, platform = settings["temperature_K"], settings["n_steps"], settings["report_interval"], settings["platform"]
    os.makedirs(os.path.join(output_dir, "chunks"), exist_ok=True)
    settings_path = os.path.join(output_dir, "settings.json")
    old = check_settings_file(settings_path, settings, "an MD run")
    done = dict(completed_chunks=old.get("completed_chunks", 0), complete=old.get("complete", False))
    pdb_path = os.path.join(output_dir, "topology.pdb")
    dcd_path = os.path.join(output_dir, "trajectory.dcd")
    if done["complete"] and os.path.exists(dcd_path):
        return mdtraj.load(dcd_path, top=pdb_path)
    with atomic_write(pdb_path) as f:
        app.PDBFile.writeFile(molecular_system.topology, molecular_system.positions, f)

    integrator = langevin_integrator(settings, int(seed) + 1)
    context = openmm.Context(molecular_system.system, integrator, openmm.Platform.getPlatformByName(platform))
    state_path = os.path.join(output_dir, "state.xml")
    n_frames = n_steps // report_interval
    n_chunks = -(-n_frames // chunk_frames)
    if done["completed_chunks"] > 0 and os.path.exists(state_path):
        with open(state_path) as f:
            context.setState(openmm.XmlSerializer.deserialize(f.read()))
        # a resumed run draws new random numbers: continue from the saved state with a derived seed
        integrator.setRandomNumberSeed(int(seed) + 1 + 7919 * done["completed_chunks"])
    else:
        done["completed_chunks"] = 0
        context.setPositions(molecular_system.positions)
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
        context.setVelocitiesToTemperature(T * unit.kelvin, int(seed) + 2)
        integrator.step(int(equilibration_steps))

    bar = tqdm(
        total=n_frames,
        initial=min(done["completed_chunks"] * chunk_frames, n_frames),
        unit="frame",
        desc=f"MD {molecular_system.name} {T:g} K",
        disable=not progress,
    )
    for chunk in range(done["completed_chunks"], n_chunks):
        frames_here = min(chunk_frames, n_frames - chunk * chunk_frames)
        xyz = np.empty((frames_here, molecular_system.n_atoms, 3), dtype=np.float32)
        for i in range(frames_here):
            integrator.step(report_interval)
            xyz[i] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            bar.update(1)
        if not np.isfinite(xyz).all():
            raise RuntimeError(f"MD blew up in chunk {chunk} (NaN positions); use a smaller time step")
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
    done["complete"] = True
    write_json_atomic(settings_path, dict(settings, **done))
    for c in range(n_chunks):
        os.remove(os.path.join(output_dir, "chunks", f"chunk_{c:06d}.npy"))
    return traj


def load_md(output_dir, stride=1):
    """Read the trajectory written by :func:`run_md` (mdtraj.Trajectory)."""
    import mdtraj

    return mdtraj.load(os.path.join(output_dir, "trajectory.dcd"), top=os.path.join(output_dir, "topology.pdb"), stride=stride)
