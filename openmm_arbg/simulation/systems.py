"""Molecular systems for ArBG, and the checks a System must pass for whole-molecule moves.

All systems are built without holonomic constraints (a proposal that violates a constraint would
be projected by the next Langevin step, which breaks detailed balance; ``docs/design.md``).
"""

import os
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
    "load_system",
    "system_from_pdb",
    "SYSTEMS",
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


def load_system(system_xml, pdb, temperature=300.0):
    """A user's own System: a serialized ``openmm.System`` (XML) with a PDB of the same molecule.

    Parameters
    ----------
    system_xml : str
        ``openmm.XmlSerializer.serialize(system)`` written to a file.
    pdb : str
        Topology (with bonds: CONECT records or standard residues) and starting positions.
    temperature : float, K

    Raises ``ValueError`` if the PDB is not the System's molecule (particle count, masses against
    elements).
    """
    from ..molecule.topology import MolecularGraph
    from ..physics import check_system_matches_molecule

    for path in (system_xml, pdb):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist")
    try:
        with open(system_xml) as f:
            system = openmm.XmlSerializer.deserialize(f.read())
    except Exception as exc:
        raise ValueError(f"{system_xml} is not a serialized OpenMM System ({exc})") from None
    if not isinstance(system, openmm.System):
        raise ValueError(f"{system_xml} holds a {type(system).__name__}, not an openmm.System")
    if system.usesPeriodicBoundaryConditions():
        raise ValueError(f"{system_xml} uses periodic boundary conditions (a box, e.g. PME). openmm-arbg samples one molecule "
                         "without a box: build the System with nonbondedMethod=NoCutoff, in vacuum or implicit solvent")
    structure = _read_pdb(pdb)
    check_system_matches_molecule(system, MolecularGraph.from_topology(structure.topology), molecule=f"the molecule of {pdb}")
    name = os.path.splitext(os.path.basename(system_xml))[0]
    return MolecularSystem(name, system, structure.topology, structure.positions, float(temperature) * unit.kelvin)


def _read_pdb(pdb):
    """``openmm.app.PDBFile``, with a clear error for a file it cannot read."""
    try:
        structure = app.PDBFile(pdb)
    except Exception as exc:  # OpenMM's parser raises AssertionError, IndexError, ValueError, ...
        raise ValueError(f"{pdb} is not a readable PDB file ({type(exc).__name__}: {exc or 'no message'}); write it "
                         "again, e.g. with openmm.app.PDBFile.writeFile") from None
    if structure.topology.getNumAtoms() == 0:
        raise ValueError(f"{pdb} holds no atoms")
    return structure


def _is_serialized_system(path):
    """Whether ``path`` is a file that starts like ``XmlSerializer.serialize(system)``."""
    try:
        with open(path) as f:
            head = f.read(300)
    except (OSError, UnicodeDecodeError):
        return False
    return head.lstrip().startswith(("<System", "<?xml")) and "<System" in head


def system_from_pdb(pdb, forcefield_files=("amber14-all.xml", "implicit/obc1.xml"), temperature=300.0):
    """A System for a PDB from OpenMM force-field files: NoCutoff, no constraints (the PDB must
    have hydrogens; one molecule, no solvent)."""
    if not os.path.isfile(pdb):
        raise FileNotFoundError(f"{pdb} does not exist")
    structure = _read_pdb(pdb)
    try:
        ff = app.ForceField(*forcefield_files)
        system = ff.createSystem(structure.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    except Exception as exc:
        raise ValueError(f"cannot parameterise {pdb} with {list(forcefield_files)}: {exc}") from None
    name = os.path.splitext(os.path.basename(pdb))[0]
    return MolecularSystem(name, system, structure.topology, structure.positions, float(temperature) * unit.kelvin)


def build_system(name, temperature=None):
    """A system from a specification string.

    * a built-in name (see ``SYSTEMS``);
    * ``peptide:SEQUENCE``: a capped peptide (amber14 + OBC1, 310 K);
    * ``system.xml:structure.pdb``: a user's serialized OpenMM System with its PDB;
    * ``structure.pdb`` or ``structure.pdb:ff1.xml,ff2.xml``: a PDB parameterised with OpenMM
      force-field files (default amber14-all + implicit/obc1).

    ``temperature`` (K) overrides the system's default (300 K for user systems).
    """
    name = str(name)
    head, _, tail = name.partition(":")
    T = {} if temperature is None else {"temperature": temperature}
    if head == "peptide":
        return capped_peptide(tail, **T)
    if head.endswith(".xml"):
        if not tail.endswith(".pdb"):
            raise ValueError(f"a System XML needs its structure: write {head}:structure.pdb")
        return load_system(head, tail, **T)
    if head.endswith(".pdb"):
        files = tuple(f for f in tail.split(",") if f) or ("amber14-all.xml", "implicit/obc1.xml")
        if len(files) == 1 and _is_serialized_system(files[0]):
            raise ValueError(f"{files[0]} is a serialized System, not a force-field file: write {files[0]}:{head} "
                             "(the System first, then its structure)")
        return system_from_pdb(head, files, **T)
    if name not in SYSTEMS:
        raise ValueError(
            f"unknown system {name!r}; choose one of {sorted(SYSTEMS)}, 'peptide:SEQUENCE' (e.g. peptide:AAA), "
            "'system.xml:structure.pdb' or 'structure.pdb[:forcefield.xml,...]'"
        )
    ms = SYSTEMS[name]()
    if temperature is not None:
        ms.temperature = float(temperature) * unit.kelvin
    return ms
