"""Molecular systems for ArBG, and the checks a System must pass for whole-molecule moves.

All systems are built without holonomic constraints (a proposal that violates a constraint would
be projected by the next Langevin step, which breaks detailed balance; ``docs/design.md``).
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


def build_system(name):
    """A system by name (see ``SYSTEMS``) or a capped peptide as ``peptide:SEQUENCE``."""
    if name.startswith("peptide:"):
        return capped_peptide(name.split(":", 1)[1])
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; choose one of {sorted(SYSTEMS)} or 'peptide:SEQUENCE' (e.g. peptide:AAA)")
    return SYSTEMS[name]()
