"""Unconstrained Langevin MD that writes training data: resumable, with a progress bar.

Output folder layout (one folder per temperature)::

    topology.pdb        the molecule (mdtraj reads trajectory.dcd with it)
    trajectory.dcd      frames, written when the run completes
    settings.json       what was run, and how far it got
    state.xml           OpenMM state of the last completed chunk (for resuming)
    chunks/             frames of completed chunks until the run completes
"""

import json
import os

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from ..physics import default_platform
from ..utils import write_json_atomic

__all__ = ["run_md", "load_md"]


def run_md(
    molecular_system,
    output_dir,
    n_steps,
    report_interval=100,
    temperature=None,
    timestep_fs=1.0,
    friction_per_ps=1.0,
    seed=0,
    platform=None,
    chunk_frames=1000,
    equilibration_steps=10000,
    progress=True,
):
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
    n_steps, report_interval = int(n_steps), int(report_interval)
    if n_steps <= 0 or report_interval <= 0 or n_steps % report_interval:
        raise ValueError(f"n_steps ({n_steps}) must be a positive multiple of report_interval ({report_interval})")
    T = molecular_system.temperature.value_in_unit(unit.kelvin) if temperature is None else float(temperature)
    platform = platform or default_platform(molecular_system.n_atoms)
    os.makedirs(os.path.join(output_dir, "chunks"), exist_ok=True)
    settings_path = os.path.join(output_dir, "settings.json")
    settings = dict(
        system=molecular_system.name,
        n_atoms=molecular_system.n_atoms,
        temperature_K=T,
        n_steps=n_steps,
        report_interval=report_interval,
        timestep_fs=timestep_fs,
        friction_per_ps=friction_per_ps,
        seed=seed,
        platform=platform,
        chunk_frames=chunk_frames,
        equilibration_steps=equilibration_steps,
    )
    done = dict(completed_chunks=0, complete=False)
    if os.path.exists(settings_path):
        with open(settings_path) as f:
            old = json.load(f)
        if {k: old.get(k) for k in settings} != settings:
            raise ValueError(
                f"{output_dir} holds a run with other settings ({settings_path}); use another output folder or "
                "delete it to start over"
            )
        done = dict(completed_chunks=old.get("completed_chunks", 0), complete=old.get("complete", False))
    pdb_path = os.path.join(output_dir, "topology.pdb")
    dcd_path = os.path.join(output_dir, "trajectory.dcd")
    if done["complete"] and os.path.exists(dcd_path):
        return mdtraj.load(dcd_path, top=pdb_path)
    with open(pdb_path, "w") as f:
        app.PDBFile.writeFile(molecular_system.topology, molecular_system.positions, f)

    integrator = openmm.LangevinMiddleIntegrator(T * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(int(seed) + 1)
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
        np.save(os.path.join(output_dir, "chunks", f"chunk_{chunk:06d}.npy"), xyz)
        state = context.getState(getPositions=True, getVelocities=True)
        with open(state_path + ".tmp", "w") as f:
            f.write(openmm.XmlSerializer.serialize(state))
        os.replace(state_path + ".tmp", state_path)
        done["completed_chunks"] = chunk + 1
        write_json_atomic(settings_path, dict(settings, **done))
    bar.close()

    xyz = np.concatenate([np.load(os.path.join(output_dir, "chunks", f"chunk_{c:06d}.npy")) for c in range(n_chunks)])
    top = mdtraj.Topology.from_openmm(molecular_system.topology)
    traj = mdtraj.Trajectory(xyz, top)
    traj.time = np.arange(1, len(xyz) + 1) * report_interval * timestep_fs * 1e-3  # ps
    traj.save_dcd(dcd_path + ".tmp.dcd")
    os.replace(dcd_path + ".tmp.dcd", dcd_path)
    done["complete"] = True
    write_json_atomic(settings_path, dict(settings, **done))
    for c in range(n_chunks):
        os.remove(os.path.join(output_dir, "chunks", f"chunk_{c:06d}.npy"))
    return traj


def load_md(output_dir, stride=1):
    """Read the trajectory written by :func:`run_md` (mdtraj.Trajectory)."""
    import mdtraj

    return mdtraj.load(os.path.join(output_dir, "trajectory.dcd"), top=os.path.join(output_dir, "topology.pdb"), stride=stride)
