"""OpenMM facts shared by simulation and sampling: the thermal energy, the platform to run on,
and what a System must satisfy for exact whole-molecule (shape) proposals."""

import math

import openmm
import openmm.unit as unit

__all__ = ["kT_kJ_per_mol", "system_fingerprint", "check_temperature", "check_platform", "default_platform", "fastest_platform", "platform_properties", "check_target", "check_shape_move_compatible", "check_system_matches_molecule", "repartition_hydrogen_mass"]


def kT_kJ_per_mol(temperature_K):
    """Thermal energy k_B T in kJ/mol at ``temperature_K`` kelvin."""
    return (unit.MOLAR_GAS_CONSTANT_R * temperature_K * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)


def check_temperature(temperature_K, name="temperature"):
    """``temperature_K`` as a float; ``ValueError`` naming ``name`` unless it is a positive finite
    number of kelvin."""
    try:
        value = float(temperature_K)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number of kelvin; got {temperature_K!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of kelvin; got {temperature_K!r}")
    return value


def check_platform(name, option="platform"):
    """``ValueError`` naming ``option`` unless ``name`` is None or an OpenMM platform available here."""
    if name is None:
        return None
    names = _available_platforms()
    if name not in names:
        raise ValueError(f"{option} {name!r} is not an OpenMM platform available here; available: {', '.join(names)}")
    return name


_MEASURED = {}  # (System XML hash, threads) -> platform name


def default_platform(n_atoms, system=None, positions=None):
    """The OpenMM platform to use, by name.

    With ``system`` and ``positions`` (nm) it is chosen by a measured speed test (cached per
    System): 20 Langevin steps on each available platform among Reference, CPU (one thread per
    worker, ``OPENMM_CPU_THREADS`` or 1), CUDA and OpenCL, the fastest wins. Here Reference wins for
    a vacuum dipeptide and CPU is about 4x faster for a capped tri-peptide in implicit solvent.
    Without them: Reference below 500 atoms, otherwise the fastest platform available.
    """
    if system is not None and positions is not None:
        return fastest_platform(system, positions)
    if n_atoms < 500:
        return "Reference"
    names = _available_platforms()
    for name in ("CUDA", "OpenCL", "CPU"):
        if name in names:
            return name
    return "Reference"


def _available_platforms():
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def system_fingerprint(system):
    """SHA-256 of the serialized ``openmm.System`` (the OpenMM version it was written by left out):
    what a resumed run compares to refuse continuing with another force field."""
    import hashlib
    import re

    xml = re.sub(r'openmmVersion="[^"]*"', "", openmm.XmlSerializer.serialize(system))
    return hashlib.sha256(xml.encode()).hexdigest()


def platform_properties(name):
    """Properties for ``openmm.Context``: the CPU platform gets ``OPENMM_CPU_THREADS`` threads (1 by
    default, since callers run one Context per worker process)."""
    import os

    return {"Threads": os.environ.get("OPENMM_CPU_THREADS", "1")} if name == "CPU" else {}


def fastest_platform(system, positions, n_steps=20):
    """Name of the platform that runs ``n_steps`` Langevin steps of ``system`` fastest (measured)."""
    import hashlib
    import time

    import numpy as np

    key = (hashlib.sha256(openmm.XmlSerializer.serialize(system).encode()).hexdigest(), platform_properties("CPU").get("Threads"))
    if key in _MEASURED:
        return _MEASURED[key]
    x = np.asarray(positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions, dtype=float)
    timings = {}
    for name in ("Reference", "CPU", "CUDA", "OpenCL"):
        if name not in _available_platforms():
            continue
        try:
            integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
            context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(name), platform_properties(name))
            context.setPositions(x.reshape(-1, 3))
            integrator.step(2)  # kernels compiled, first-call costs paid
            t0 = time.perf_counter()
            integrator.step(n_steps)
            context.getState(getEnergy=True)
            timings[name] = time.perf_counter() - t0
            del context, integrator
        except Exception:  # a platform that cannot run this System is not a candidate
            continue
    _MEASURED[key] = min(timings, key=timings.get) if timings else "Reference"
    return _MEASURED[key]


def check_shape_move_compatible(system):
    """Raise ``ValueError`` if whole-molecule shape proposals would not be exact for ``system``.

    Refused: holonomic constraints, periodic boxes (solvated systems), and forces whose energy
    is not invariant under rigid-body motion (``CustomExternalForce`` position restraints,
    ``RMSDForce``, ``CustomCentroidBondForce`` with absolute positions are not detected and are
    the user's responsibility).
    """
    if system.getNumConstraints() > 0:
        raise ValueError(
            f"the System has {system.getNumConstraints()} holonomic constraints. A whole-molecule proposal that "
            "violates them would be projected by the next dynamics step, which breaks detailed balance. Build the "
            "System with constraints=None (and a 1 fs time step, or hydrogen mass repartitioning)."
        )
    if system.usesPeriodicBoundaryConditions():
        raise ValueError(
            "the System uses periodic boundary conditions. Whole-molecule proposals are only exact for a single "
            "molecule in vacuum or implicit solvent (no box, no explicit solvent); use NoCutoff."
        )
    for force in system.getForces():
        if isinstance(force, (openmm.CustomExternalForce, openmm.RMSDForce)):
            raise ValueError(
                f"the System contains a {type(force).__name__}, whose energy changes under rotation or translation "
                "of the molecule; ArBG proposals keep the rigid-body frame of the current state only for energies "
                "that are invariant under rigid motion. Remove the force or express it in internal coordinates."
            )


def repartition_hydrogen_mass(system, graph, hydrogen_mass):
    """Make every hydrogen of ``system`` weigh ``hydrogen_mass`` Da, taking the difference from the
    heavy atom it is bonded to (in place; the molecule's total mass is kept). Masses do not enter
    the Boltzmann distribution of positions, so sampling and reweighting are unchanged; the fastest
    vibrations slow down, which lets an unconstrained molecule take longer time steps.

    Parameters
    ----------
    system : openmm.System
    graph : openmm_arbg.molecule.topology.MolecularGraph
        The molecule's atoms and bonds, in the System's particle order.
    hydrogen_mass : float, Da

    Raises
    ------
    ValueError
        If a heavy atom would be left lighter than 1 Da.
    """
    for i, element in enumerate(graph.elements):
        if element not in ("H", "D"):
            continue
        heavy = [j for j in graph.neighbors[i] if graph.elements[j] not in ("H", "D")]
        if len(heavy) != 1:
            raise ValueError(f"hydrogen {graph.describe_atom(i)} is bonded to {len(heavy)} heavy atoms; repartitioning needs one")
        j = heavy[0]
        move = hydrogen_mass - system.getParticleMass(i).value_in_unit(unit.dalton)
        left = system.getParticleMass(j).value_in_unit(unit.dalton) - move
        if left < 1.0:
            raise ValueError(f"a hydrogen mass of {hydrogen_mass} Da would leave {graph.describe_atom(j)} with {left:.2f} Da; use a "
                             "lighter hydrogen mass")
        system.setParticleMass(i, hydrogen_mass * unit.dalton)
        system.setParticleMass(j, left * unit.dalton)
    return system


def check_system_matches_molecule(system, graph, molecule="the model's molecule"):
    """Raise ``ValueError`` unless ``system``'s particles are the molecule ``graph``'s atoms: the
    same number, and masses that fit the elements (``molecule`` names the graph in messages). Hydrogen mass repartitioning moves mass between
    a heavy atom and its hydrogens, so each heavy atom is compared together with its bonded
    hydrogens (within 0.05 Da), and each hydrogen must weigh between 0.9 and 5 Da."""
    import mdtraj

    n = system.getNumParticles()
    if n != graph.n_atoms:
        raise ValueError(f"the System has {n} particles but {molecule} has {graph.n_atoms} atoms")

    def mass(i):
        return system.getParticleMass(i).value_in_unit(unit.dalton)

    def element_mass(i):
        return mdtraj.element.get_by_symbol(graph.elements[i]).mass

    for i, element in enumerate(graph.elements):
        if element == "X":
            continue
        if element in ("H", "D"):
            if not 0.9 <= mass(i) <= 5.0:
                raise ValueError(
                    f"particle {i} of the System has mass {mass(i):.2f} Da but atom {graph.describe_atom(i)} of {molecule} "
                    "is a hydrogen: the System is another molecule or lists its atoms in another order"
                )
            continue
        hydrogens = [j for j in graph.neighbors[i] if graph.elements[j] in ("H", "D")]
        got = mass(i) + sum(mass(j) for j in hydrogens)
        expected = element_mass(i) + sum(element_mass(j) for j in hydrogens)
        if abs(got - expected) > 0.05:
            raise ValueError(
                f"particle {i} of the System (with its {len(hydrogens)} bonded hydrogens) weighs {got:.2f} Da but the "
                f"atom {graph.describe_atom(i)} of {molecule} ({element}, with its hydrogens) weighs {expected:.2f} Da: the "
                "System is another molecule or lists its atoms in another order"
            )
    _check_bonds_match(system, graph, molecule)


def _check_bonds_match(system, graph, molecule):
    """Raise ``ValueError`` if the System's force-field bonds join atoms that the molecule does
    not bond: atoms of equal mass listed in another order (two hydrogens of different groups, say)
    pass the mass check but not this one. The force-field bonds are the System's first
    ``HarmonicBondForce`` (OpenMM's force fields and CHARMM files create it before any
    Urey-Bradley force); one whose pairs are mostly not the molecule's bonds (restraints, say) is
    not checked."""
    force = next((f for f in system.getForces() if isinstance(f, openmm.HarmonicBondForce)), None)
    if force is None or force.getNumBonds() == 0:
        return
    pairs = [tuple(sorted(force.getBondParameters(k)[:2])) for k in range(force.getNumBonds())]
    bonded = {tuple(sorted((i, j))) for i in range(graph.n_atoms) for j in graph.neighbors[i]}
    strangers = [(i, j) for i, j in pairs if (i, j) not in bonded]
    if strangers and len(strangers) <= 0.5 * len(pairs):
        i, j = strangers[0]
        raise ValueError(
            f"the System has a bond between particles {i} and {j}, but in {molecule} they are {graph.describe_atom(i)} "
            f"and {graph.describe_atom(j)}, which are not bonded ({len(strangers)} such bonds): the System lists its atoms "
            "in another order than the structure, or is another molecule. Write the PDB from the same Topology as the "
            "System, e.g. openmm.app.PDBFile.writeFile(topology, positions, f) beside XmlSerializer.serialize(system)"
        )


def check_target(system, graph):
    """Raise ``ValueError`` unless ``system`` is a target for which proposals of the molecule
    ``graph`` are exact: :func:`check_shape_move_compatible` and :func:`check_system_matches_molecule`.
    Every entry point that weighs or accepts proposals with energies calls it."""
    check_shape_move_compatible(system)
    check_system_matches_molecule(system, graph)
