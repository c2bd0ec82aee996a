"""Categorical features that tell the network what each model coordinate is.

Two schemes, one per kind of model:

* ``"basic"`` (single-molecule models): feature 0 is the element of the atom the coordinate
  places; feature 1 combines the coordinate's kind (its support: unbounded, positive, angle,
  periodic, half torsion) and role (x/y/z axis, or bond/angle/torsion) as ``kind_index * 3 + role``.
* ``"peptide"`` (transferable models): the two above, then the atom's PDB name, its residue type,
  its residue's index counted from the N and from the C terminus, and the PDB name of the atom it
  is bonded to in the Z-matrix (its parent), so that a coordinate is identified chemically in any
  peptide. With it comes a per-molecule *context*: the sequence as (residue type, index) pairs,
  which the network reads with a non-causal encoder and cross-attention, so that the first
  coordinates already know the whole sequence.

The vocabularies are fixed, so one network reads every molecule; new entries are appended, so the
ids of the older ones, and the networks trained on them, stay valid. Names outside a vocabulary
map to its last id ("other").

Bin keys (:func:`bin_keys`) say which coordinates share bin ranges in a transferable model: bond
lengths by the element and bond count of their two atoms, angles by those of their three atoms,
half torsions by their stereocentre's; periodic torsions span ``[-pi, pi)``.
"""

import torch

from .representation import COORDINATE_KINDS, HALF_TORSION, PERIODIC

__all__ = ["ELEMENTS", "FEATURE_SIZES", "PEPTIDE_FEATURE_SIZES", "RESIDUE_NAMES", "ATOM_NAMES", "MAX_RESIDUES",
           "FEATURE_SCHEMES", "coordinate_features", "peptide_coordinate_features", "sequence_context",
           "features_for", "bin_keys"]

ELEMENTS = ["H", "C", "N", "O", "S", "P", "F", "Cl", "Br", "I"]  # anything else: index len(ELEMENTS)
FEATURE_SIZES = [len(ELEMENTS) + 1, 3 * len(COORDINATE_KINDS)]

RESIDUE_NAMES = ["ACE", "NME", "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS",
                 "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL", "HID", "HIE", "HIP", "CYX", "ASH", "GLH", "LYN",
                 "NH2"]  # fmt: skip
ATOM_NAMES = ["N", "CA", "C", "O", "OXT", "CH3", "H", "HA", "HA2", "HA3", "CB", "HB", "HB1", "HB2", "HB3", "CG", "CG1",
              "CG2", "HG", "HG1", "HG11", "HG12", "HG13", "HG2", "HG21", "HG22", "HG23", "HG3", "OG", "OG1", "SG", "CD",
              "CD1", "CD2", "HD1", "HD11", "HD12", "HD13", "HD2", "HD21", "HD22", "HD23", "HD3", "ND1", "ND2", "OD1",
              "OD2", "SD", "CE", "CE1", "CE2", "CE3", "HE", "HE1", "HE2", "HE21", "HE22", "HE3", "NE", "NE1", "NE2",
              "OE1", "OE2", "CZ", "CZ2", "CZ3", "HZ", "HZ1", "HZ2", "HZ3", "NZ", "CH2", "HH", "HH11", "HH12", "HH2",
              "HH21", "HH22", "NH1", "NH2", "OH", "H1", "H2", "H3"]  # fmt: skip
MAX_RESIDUES = 16  # residue indices beyond it share the last id
PEPTIDE_FEATURE_SIZES = FEATURE_SIZES + [len(ATOM_NAMES) + 1, len(RESIDUE_NAMES) + 1, MAX_RESIDUES, MAX_RESIDUES,
                                         len(ATOM_NAMES) + 1]
CONTEXT_SIZES = [len(RESIDUE_NAMES) + 1, MAX_RESIDUES]
FEATURE_SCHEMES = ("basic", "peptide")


def _index(vocabulary, name):
    return vocabulary.index(name) if name in vocabulary else len(vocabulary)


def coordinate_features(graph, representation):
    """Features of each model coordinate (``"basic"`` scheme), ``torch.LongTensor`` of shape (D, 2)."""
    element_ids = [_index(ELEMENTS, graph.elements[i]) for i in representation.coordinate_atoms]
    roles = [
        COORDINATE_KINDS.index(k) * 3 + r for k, r in zip(representation.coordinate_kinds, representation.coordinate_roles)
    ]
    return torch.tensor([element_ids, roles], dtype=torch.long).T


def _residue_indices(graph):
    """Residue index of every atom (:meth:`MolecularGraph.residues` order) and the residue count."""
    residues = graph.residues()
    index = [0] * graph.n_atoms
    for r, (_, atoms) in enumerate(residues):
        for i in atoms:
            index[i] = r
    return index, len(residues)


def coordinate_atom_tuples(representation):
    """The atoms that define each model coordinate, in the model's order: ``(i, j)`` for a bond
    (distance of ``i`` from ``j``), ``(i, j, k)`` for an angle at ``j``, ``(i, j, k, l)`` for a
    torsion (internal coordinates only)."""
    if not hasattr(representation, "zmatrix"):
        raise ValueError("only internal coordinates name the atoms of each coordinate; use representation='internal'")
    return representation.coordinate_atom_tuples()


def peptide_coordinate_features(graph, representation):
    """Features of each model coordinate (``"peptide"`` scheme), ``torch.LongTensor`` (D, 7)."""
    basic = coordinate_features(graph, representation)
    residue, n_residues = _residue_indices(graph)
    rows = []
    for atoms in coordinate_atom_tuples(representation):
        i, j = atoms[0], atoms[1]
        r = residue[i]
        rows.append([_index(ATOM_NAMES, graph.atoms[i]["name"]), _index(RESIDUE_NAMES, graph.atoms[i]["resname"]),
                     min(r, MAX_RESIDUES - 1), min(n_residues - 1 - r, MAX_RESIDUES - 1),
                     _index(ATOM_NAMES, graph.atoms[j]["name"])])
    return torch.cat([basic, torch.tensor(rows, dtype=torch.long)], dim=1)


def sequence_context(graph):
    """The molecule's sequence as a ``torch.LongTensor`` (R, 2): residue type and index per residue."""
    return torch.tensor([[_index(RESIDUE_NAMES, name), min(r, MAX_RESIDUES - 1)]
                         for r, (name, _) in enumerate(graph.residues())], dtype=torch.long)


def features_for(scheme, graph, representation):
    """``(features (D, F), context (R, 2) or None)`` of a molecule under a feature scheme."""
    if scheme == "basic":
        return coordinate_features(graph, representation), None
    if scheme == "peptide":
        return peptide_coordinate_features(graph, representation), sequence_context(graph)
    raise ValueError(f"feature scheme must be one of {FEATURE_SCHEMES}; got {scheme!r}")


def bin_keys(graph, representation):
    """The key of each model coordinate's bin range in a transferable model (list of str).

    Bonds: ``bond:`` and the two atoms as element plus bond count (``C4``, ``H1``), sorted;
    angles: the three atoms with the end atoms sorted; half torsions: ``half_torsion:`` and their
    stereocentre (fitted ranges keep the centres tetrahedral, so the stereochemistry check agrees
    with the support); periodic torsions: ``periodic`` (always ``[-pi, pi)``).
    """
    degree = [len(nb) for nb in graph.neighbors]

    def label(i):
        return f"{graph.elements[i]}{degree[i]}"

    keys = []
    for kind, atoms in zip(representation.coordinate_kinds, coordinate_atom_tuples(representation)):
        if kind == PERIODIC:
            keys.append(PERIODIC)
        elif kind == HALF_TORSION:  # by its stereocentre: its range keeps every centre tetrahedral
            keys.append(f"{HALF_TORSION}:{label(atoms[1])}")
        elif len(atoms) == 2:
            keys.append("bond:" + "-".join(sorted(label(a) for a in atoms)))
        else:
            i, j, k = atoms
            ends = sorted([label(i), label(k)])
            keys.append(f"angle:{ends[0]}-{label(j)}-{ends[1]}")
    return keys
