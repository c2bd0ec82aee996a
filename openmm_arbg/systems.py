"""Molecular systems for ArBG, and the checks a System must pass for whole-molecule moves.

All systems are built without holonomic constraints (a proposal that violates a constraint would
be projected by the next Langevin step, which breaks detailed balance; DESIGN section 3).
"""

from dataclasses import dataclass

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

__all__ = [
    "MolecularSystem",
    "alanine_dipeptide_vacuum",
    "alanine_dipeptide_implicit",
    "capped_peptide",
    "build_system",
    "check_shape_move_compatible",
    "SYSTEMS",
    "default_platform",
]


@dataclass
class MolecularSystem:
    """An OpenMM System with its topology, starting positions and temperature.

    Attributes
    ----------
    name : str
    system : openmm.System
    topology : openmm.app.Topology
    positions : openmm.unit.Quantity, (N, 3) nm
    temperature : openmm.unit.Quantity, K
    """

    name: str
    system: openmm.System
    topology: app.Topology
    positions: unit.Quantity
    temperature: unit.Quantity = None

    @property
    def n_atoms(self):
        return self.system.getNumParticles()

    def positions_nm(self):
        return np.asarray(self.positions.value_in_unit(unit.nanometer), dtype=float)


def alanine_dipeptide_vacuum():
    """Alanine dipeptide (Ace-Ala-Nme) in vacuum, openmmtools' amber99sb-ildn system, no
    constraints, 300 K."""
    from openmmtools import testsystems

    t = testsystems.AlanineDipeptideVacuum(constraints=None)
    return MolecularSystem("alanine_dipeptide_vacuum", t.system, t.topology, t.positions, 300.0 * unit.kelvin)


def alanine_dipeptide_implicit():
    """Alanine dipeptide in OBC implicit solvent as in the ArBG paper: amber99sb-ildn + amber99_obc,
    NoCutoff, no constraints, 300 K."""
    from openmmtools import testsystems

    t = testsystems.AlanineDipeptideVacuum(constraints=None)  # topology and positions only
    ff = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    system = ff.createSystem(t.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    return MolecularSystem("alanine_dipeptide_implicit", system, t.topology, t.positions, 300.0 * unit.kelvin)


def capped_peptide(sequence, temperature=310.0, implicit_solvent=True):
    """Ace-<sequence>-Nme built from one-letter codes: PeptideBuilder geometry (all L, trans
    peptide bonds), hydrogens from ``Modeller.addHydrogens``, amber14 (+ OBC1), no constraints.

    Parameters
    ----------
    sequence : str
        One-letter amino-acid codes, e.g. ``"AAA"``.
    temperature : float, K
    implicit_solvent : bool
    """
    from .peptides import build_capped_peptide

    topology, positions = build_capped_peptide(sequence)
    files = ["amber14-all.xml"] + (["implicit/obc1.xml"] if implicit_solvent else [])
    ff = app.ForceField(*files)
    system = ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    name = f"ace-{sequence.lower()}-nme" + ("-obc1" if implicit_solvent else "-vacuum")
    return MolecularSystem(name, system, topology, positions, float(temperature) * unit.kelvin)


SYSTEMS = {
    "alanine_dipeptide_vacuum": alanine_dipeptide_vacuum,
    "alanine_dipeptide_implicit": alanine_dipeptide_implicit,
}


def build_system(name):
    """A system by name (see ``SYSTEMS``) or a capped peptide as ``peptide:SEQUENCE``."""
    if name.startswith("peptide:"):
        return capped_peptide(name.split(":", 1)[1])
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; choose one of {sorted(SYSTEMS)} or 'peptide:SEQUENCE' (e.g. peptide:AAA)")
    return SYSTEMS[name]()


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
