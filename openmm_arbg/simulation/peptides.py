"""Capped peptides Ace-X...-Nme from a one-letter sequence.

Geometry from PeptideBuilder (ideal bond lengths and angles, extended backbone, trans peptide
bonds, L residues), caps made from the terminal glycines PeptideBuilder adds, hydrogens from
OpenMM's ``Modeller.addHydrogens``. PDBFixer's missing-residue route is avoided: it can build
D-residues. The result is checked: every residue L, every peptide bond trans.

Builds are deterministic: the same sequence gives the same atom names, order and positions on
every call. ``Modeller.addHydrogens`` starts new hydrogens at positions drawn from Python's global
``random`` and minimises them on the default platform; the build draws them from a private,
fixed-seed stream (the global stream is left as it was) and minimises on the Reference platform.
The labelling of equivalent hydrogens (the three of a methyl or NH3+ group, the two of a CH2) is
then made canonical: at every four-connected atom carrying two or more hydrogens, the triple
product of the bond vectors to its first three neighbours (index order) is made positive by
swapping the positions of its last two hydrogens if needed, a relabelling of identical particles
that leaves the energy unchanged. So MD runs started from independent builds label methyl
hydrogens alike.
"""

import io
import random

import numpy as np
import openmm

__all__ = ["build_capped_peptide", "check_peptide_geometry", "canonicalise_equivalent_hydrogens", "ONE_LETTER",
           "THREE_TO_ONE"]

_HYDROGEN_SEED = 20240531  # seed of the stream from which addHydrogens draws its starting positions

ONE_LETTER = dict(
    A="ALA", R="ARG", N="ASN", D="ASP", C="CYS", Q="GLN", E="GLU", G="GLY", H="HIS", I="ILE",
    L="LEU", K="LYS", M="MET", F="PHE", P="PRO", S="SER", T="THR", W="TRP", Y="TYR", V="VAL",
)  # fmt: skip
# residue name -> one-letter code, protonation and disulfide variants included
THREE_TO_ONE = {three: one for one, three in ONE_LETTER.items()}
THREE_TO_ONE.update(HID="H", HIE="H", HIP="H", CYX="C", ASH="D", GLH="E", LYN="K")


def build_capped_peptide(sequence):
    """Topology and positions (nm) of Ace-<sequence>-Nme with hydrogens (amber14 naming).

    Parameters
    ----------
    sequence : str
        One-letter codes of the 20 standard amino acids, e.g. ``"AAA"`` or ``"GYDPETGTWG"``.

    Returns
    -------
    (openmm.app.Topology, openmm.unit.Quantity)
    """
    import openmm.app as app
    import PeptideBuilder
    from Bio.PDB import PDBIO

    sequence = str(sequence).strip().upper()
    bad = sorted(set(sequence) - set(ONE_LETTER))
    if not sequence or bad:
        raise ValueError(
            f"sequence must be one-letter codes of the 20 standard amino acids; got {sequence!r}"
            + (f" (unknown: {''.join(bad)})" if bad else "")
        )
    structure = PeptideBuilder.make_extended_structure("G" + sequence + "G")
    residues = list(structure.get_residues())
    first, last = residues[0], residues[-1]
    # Ace from the first glycine: CA -> CH3, keep C and O, drop N
    first.detach_child("N")
    first["CA"].id = first["CA"].name = first["CA"].fullname = "CH3"
    first.child_dict["CH3"] = first.child_dict.pop("CA")
    first.resname = "ACE"
    # Nme from the last glycine: keep N, CA -> C (methyl carbon), drop C and O
    last.detach_child("C")
    last.detach_child("O")
    ca = last.child_dict.pop("CA")
    ca.id = ca.name = ca.fullname = "C"
    last.child_dict["C"] = ca
    last.resname = "NME"
    for atom in structure.get_atoms():  # element from the first letter of the name
        atom.element = atom.get_id()[0]
    out = io.StringIO()
    pdbio = PDBIO()
    pdbio.set_structure(structure)
    pdbio.save(out)
    pdb = app.PDBFile(io.StringIO(out.getvalue()))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    _add_hydrogens_deterministically(modeller, app.ForceField("amber14-all.xml"))
    positions = canonicalise_equivalent_hydrogens(modeller.topology, modeller.positions)
    check_peptide_geometry(modeller.topology, positions)
    return modeller.topology, positions


def _add_hydrogens_deterministically(modeller, forcefield):
    """``modeller.addHydrogens(forcefield)`` with a fixed random stream and the Reference platform;
    Python's global random state is restored afterwards."""
    import openmm

    state = random.getstate()
    try:
        random.seed(_HYDROGEN_SEED)
        modeller.addHydrogens(forcefield, platform=openmm.Platform.getPlatformByName("Reference"))
    finally:
        random.setstate(state)


def canonicalise_equivalent_hydrogens(topology, positions):
    """Positions with the hydrogens of each CH3/NH3+/CH2 group relabelled canonically.

    At every atom with four bonded neighbours of which at least two are hydrogens, the triple
    product ``det(x[n0] - x[c], x[n1] - x[c], x[n2] - x[c])`` of its neighbours in index order is
    made positive by swapping the positions of its two highest-index hydrogens when it is
    negative. Hydrogens bonded to the same atom are identical particles in the force fields used
    here, so the energy does not change.

    Returns
    -------
    openmm.unit.Quantity, (N, 3) nm
    """
    import openmm.unit as unit

    x = np.array(positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions, dtype=float)
    neighbours = [[] for _ in range(topology.getNumAtoms())]
    for a, b in topology.bonds():
        neighbours[a.index].append(b.index)
        neighbours[b.index].append(a.index)
    hydrogen = [a.element is not None and a.element.symbol == "H" for a in topology.atoms()]
    for c, nb in enumerate(neighbours):
        nb = sorted(nb)
        hs = [n for n in nb if hydrogen[n]]
        if len(nb) != 4 or len(hs) < 2:
            continue
        if np.linalg.det(x[nb[:3]] - x[c]) < 0:
            i, j = hs[-2], hs[-1]
            x[[i, j]] = x[[j, i]]
    return unit.Quantity([openmm.Vec3(*row) for row in x], unit.nanometer)


def _chirality_volume(x, n, ca, c, cb):
    return float(np.linalg.det(np.array([x[n] - x[ca], x[c] - x[ca], x[cb] - x[ca]])))


def check_peptide_geometry(topology, positions):
    """Raise ``ValueError`` unless every residue with a CB is L and every peptide bond is trans.

    L: the determinant of the rows ``(N - CA, C - CA, CB - CA)`` is positive (as in the L-alanine
    of openmmtools' alanine dipeptide).
    Trans: the omega dihedral CA(i)-C(i)-N(i+1)-CA(i+1) (or CH3 of Ace / C of Nme) is within
    90 degrees of 180.
    """
    import mdtraj
    import openmm.unit as unit

    x = np.asarray(positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions)
    top = mdtraj.Topology.from_openmm(topology)
    for res in top.residues:
        names = {a.name: a.index for a in res.atoms}
        if {"N", "CA", "C", "CB"} <= set(names):
            if _chirality_volume(x, names["N"], names["CA"], names["C"], names["CB"]) < 0:
                raise ValueError(f"residue {res} is a D-amino acid; only L residues are supported")
    traj = mdtraj.Trajectory(x[None].astype(np.float32), top)
    indices, omega = mdtraj.compute_omega(traj)
    if len(omega[0]) and np.any(np.abs(np.degrees(omega[0])) < 90):
        raise ValueError("a peptide bond is cis; the builder must produce all-trans peptide bonds")
