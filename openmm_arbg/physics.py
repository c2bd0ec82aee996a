"""OpenMM facts shared by simulation and sampling: the thermal energy, the platform to run on,
and what a System must satisfy for exact whole-molecule (shape) proposals."""

import openmm
import openmm.unit as unit

__all__ = ["kT_kJ_per_mol", "default_platform", "check_shape_move_compatible", "check_system_matches_molecule"]


def kT_kJ_per_mol(temperature_K):
    """Thermal energy k_B T in kJ/mol at ``temperature_K`` kelvin."""
    return (unit.MOLAR_GAS_CONSTANT_R * temperature_K * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)


def default_platform(n_atoms):
    """OpenMM platform name: Reference below 500 atoms (fastest for small molecules on CPU),
    otherwise the fastest available."""
    if n_atoms < 500:
        return "Reference"
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    for name in ("CUDA", "OpenCL", "CPU"):
        if name in names:
            return name
    return "Reference"


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


def check_system_matches_molecule(system, graph):
    """Raise ``ValueError`` unless ``system``'s particles are the molecule ``graph``'s atoms:
    the same number, and masses that fit each atom's element (within 4 Da, which allows
    hydrogen mass repartitioning)."""
    import mdtraj

    n = system.getNumParticles()
    if n != graph.n_atoms:
        raise ValueError(f"the System has {n} particles but the model's molecule has {graph.n_atoms} atoms")
    for i, element in enumerate(graph.elements):
        if element == "X":
            continue
        mass = system.getParticleMass(i).value_in_unit(unit.dalton)
        expected = mdtraj.element.get_by_symbol(element).mass
        if abs(mass - expected) > 4.0:
            raise ValueError(
                f"particle {i} of the System has mass {mass:.2f} Da but the model's atom {graph.describe_atom(i)} is "
                f"{element} ({expected:.2f} Da): the System is another molecule or lists its atoms in another order"
            )
