"""Capped peptides Ace-X...-Nme from a one-letter sequence.

Geometry from PeptideBuilder (ideal bond lengths and angles, extended backbone, trans peptide
bonds, L residues), caps made from the terminal glycines PeptideBuilder adds, hydrogens from
OpenMM's ``Modeller.addHydrogens``. PDBFixer's missing-residue route is avoided: it can build
D-residues. The result is checked: every residue L, every peptide bond trans.
"""

import io

import numpy as np

__all__ = ["build_capped_peptide", "check_peptide_geometry", "ONE_LETTER"]

ONE_LETTER = dict(
    A="ALA", R="ARG", N="ASN", D="ASP", C="CYS", Q="GLN", E="GLU", G="GLY", H="HIS", I="ILE",
    L="LEU", K="LYS", M="MET", F="PHE", P="PRO", S="SER", T="THR", W="TRP", Y="TYR", V="VAL",
)  # fmt: skip


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
    modeller.addHydrogens(app.ForceField("amber14-all.xml"))
    check_peptide_geometry(modeller.topology, modeller.positions)
    return modeller.topology, modeller.positions


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
