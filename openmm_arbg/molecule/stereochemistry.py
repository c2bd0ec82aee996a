"""Stereochemistry: which tetrahedral centres are stereocentres, and their handedness.

A tetrahedral centre (an atom with four bonded neighbours) is a stereocentre only if its four
substituents are pairwise distinct as graphs: the branch hanging off each neighbour, away from
the centre, compared by elements and bonding to a depth that settles it (``docs/design.md``,
section 9). CH3, NH3+, CH2 with two equal hydrogens and equivalent oxygens are not
stereocentres: permuting equivalent atoms is a symmetry of the energy, so their "handedness" is
an artefact of atom labelling.

Branches are compared by colour refinement on directed bonds (the Weisfeiler-Lehman scheme on
walks that never step straight back): the colour of ``v -> u`` (the branch rooted at ``u``,
entered from ``v``) starts as ``u``'s element and is refined with the multiset of colours of
``u -> w`` for the other neighbours ``w`` of ``u``, until the partition stops changing (at most
one refinement per directed bond; rings are walked around, so ring branches compare by the ring
and what hangs off it). Colours are ranks of sorted, labelling-free keys, so they and the order
of substituents they define do not depend on atom indices or names.

The handedness of a stereocentre is the sign of the triple product of the bond vectors to its
first three substituents in that canonical order; for any centre that lies inside the
tetrahedron of its neighbours (every sp3 geometry) this sign is an alternating function of the
order of the four substituents, which is what lets older checkpoints (signs of the first three
neighbours in index order, at every four-connected atom) be converted exactly.
"""

import numpy as np

from .topology import MolecularGraph

__all__ = [
    "StereoChecker",
    "branch_colours",
    "find_stereocentres",
    "canonical_substituents",
    "permutation_parity",
    "equivalent_atom_groups",
    "permute_equivalent_atoms",
]

CONVENTION = "canonical-substituents"
LEGACY_CONVENTION = "legacy-index-order"


def branch_colours(graph):
    """Labelling-independent colours of the branches of a molecular graph.

    Parameters
    ----------
    graph : MolecularGraph

    Returns
    -------
    dict
        ``(v, u) -> int`` for every bonded pair in both directions: the colour of the branch
        rooted at ``u`` that is entered from ``v`` (everything reachable from ``u`` without
        stepping straight back to ``v``). Two branches have the same colour if and only if colour
        refinement cannot tell them apart; smaller colours sort first in a labelling-free order.
    """
    g = MolecularGraph.from_topology(graph)
    edges = [(v, u) for v in range(g.n_atoms) for u in g.neighbors[v]]
    elements = sorted(set(g.elements))
    colour = {(v, u): elements.index(g.elements[u]) for v, u in edges}
    n_classes = len(set(colour.values()))
    for _ in range(len(edges) + 1):
        keys = {
            (v, u): (colour[(v, u)], tuple(sorted(colour[(u, w)] for w in g.neighbors[u] if w != v))) for v, u in edges
        }
        ranks = {key: r for r, key in enumerate(sorted(set(keys.values())))}
        colour = {e: ranks[keys[e]] for e in edges}
        if len(ranks) == n_classes:
            break
        n_classes = len(ranks)
    return colour


def find_stereocentres(graph, colours=None):
    """Atoms with four bonded neighbours whose four substituents are pairwise distinct.

    Parameters
    ----------
    graph : MolecularGraph, openmm.app.Topology or mdtraj.Topology
    colours : dict, optional
        :func:`branch_colours` of the graph, if already computed.

    Returns
    -------
    list of int
        Atom indices, ascending. For a capped peptide: the CA of every residue but glycine, and
        the CB of threonine and isoleucine.
    """
    g = MolecularGraph.from_topology(graph)
    colours = branch_colours(g) if colours is None else colours
    return [
        c
        for c in range(g.n_atoms)
        if len(g.neighbors[c]) == 4 and len({colours[(c, n)] for n in g.neighbors[c]}) == 4
    ]


def equivalent_atom_groups(graph, colours=None):
    """Groups of interchangeable terminal atoms: the hydrogens of CH3, CH2, NH3+ and the like,
    bonded to the same atom with identical branches (same element, same colour).

    Returns
    -------
    list of (int, list of int)
        ``(centre, atoms)`` for every group of two or more.
    """
    g = MolecularGraph.from_topology(graph)
    colours = branch_colours(g) if colours is None else colours
    groups = []
    for c in range(g.n_atoms):
        by_colour = {}
        for n in g.neighbors[c]:
            if len(g.neighbors[n]) == 1:
                by_colour.setdefault(colours[(c, n)], []).append(n)
        groups += [(c, atoms) for atoms in by_colour.values() if len(atoms) > 1]
    return groups


def permute_equivalent_atoms(positions, groups, rng=None):
    """Copies of frames (n, N, 3) with the atoms of every group randomly permuted (uniformly
    over all permutations, independently per frame and group). The energy is invariant under
    these permutations, so the result is a sample of the same Boltzmann distribution that covers
    every labelling of equivalent atoms (training data for models that must propose them all)."""
    rng = np.random.default_rng(rng)
    x = np.array(positions, dtype=float, copy=True)
    for _, atoms in groups:
        atoms = np.asarray(atoms)
        perm = np.argsort(rng.random((len(x), len(atoms))), axis=1)
        x[:, atoms] = np.take_along_axis(x[:, atoms], perm[:, :, None], axis=1)
    return x


def canonical_substituents(graph, centre, colours=None):
    """The four neighbours of a stereocentre in the labelling-free order of their branches."""
    g = MolecularGraph.from_topology(graph)
    colours = branch_colours(g) if colours is None else colours
    return sorted(g.neighbors[centre], key=lambda n: colours[(centre, n)])


def permutation_parity(seq, ordered):
    """+1 if ``seq`` is an even permutation of ``ordered``, -1 if odd."""
    pos = [list(ordered).index(x) for x in seq]
    sign = 1
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            if pos[i] > pos[j]:
                sign = -sign
    return sign


class StereoChecker:
    """Handedness of every stereocentre, recorded from a reference and checked.

    A classical force field gives mirror images the same energy, but MD of one stereoisomer never
    visits the other; the target is the Boltzmann distribution restricted to the reference's
    stereochemistry (``docs/design.md``). Only real stereocentres (:func:`find_stereocentres`) are
    checked; each centre's sign is that of the triple product of the bond vectors to its first
    three substituents in canonical order (:func:`canonical_substituents`), which does not depend
    on how equivalent atoms (methyl hydrogens, say) are labelled.

    Parameters
    ----------
    graph : MolecularGraph (or a topology)
    reference_signs : sequence of int, optional
        +1/-1 per centre (set with :meth:`record`). Signs written by openmm-arbg before
        stereocentres were detected (one per four-connected atom, first three neighbours in index
        order) are recognised by their number when that differs from the number of stereocentres,
        or with ``convention="legacy-index-order"``, and converted exactly.
    convention : {"canonical-substituents", "legacy-index-order"}, optional
        How ``reference_signs`` were defined; default canonical, or legacy when recognised as such.
    centers : sequence of int, optional
        The stereocentres, if stored (default: :func:`find_stereocentres`).
    """

    def __init__(self, graph, reference_signs=None, convention=None, centers=None):
        self.graph = MolecularGraph.from_topology(graph)
        colours = branch_colours(self.graph)
        self.centers = find_stereocentres(self.graph, colours) if centers is None else [int(c) for c in centers]
        for c in self.centers:
            if len(self.graph.neighbors[c]) != 4:
                raise ValueError(f"{self.graph.describe_atom(c)} has {len(self.graph.neighbors[c])} neighbours; a stereocentre needs 4")
        self.substituents = [canonical_substituents(self.graph, c, colours) for c in self.centers]
        self.reference_signs = None
        if reference_signs is not None:
            signs = np.asarray(reference_signs, dtype=int).reshape(-1)
            tetrahedral = self.tetrahedral_atoms()
            if convention is None:
                legacy = len(signs) == len(tetrahedral) != len(self.centers)
                convention = LEGACY_CONVENTION if legacy else CONVENTION
            if convention == LEGACY_CONVENTION:
                signs = self._from_legacy(signs, tetrahedral)
            elif convention != CONVENTION:
                raise ValueError(f"unknown stereo convention {convention!r}; use {CONVENTION!r} or {LEGACY_CONVENTION!r}")
            if len(signs) != len(self.centers) or not np.isin(signs, (-1, 1)).all():
                raise ValueError(
                    f"expected one sign (+1 or -1) per stereocentre ({len(self.centers)}); got {len(signs)} values"
                )
            self.reference_signs = signs

    def tetrahedral_atoms(self):
        """Every atom with four bonded neighbours (the centres of the legacy convention)."""
        return [i for i in range(self.graph.n_atoms) if len(self.graph.neighbors[i]) == 4]

    def _from_legacy(self, signs, tetrahedral):
        if len(signs) != len(tetrahedral):
            raise ValueError(
                f"legacy stereo signs: expected one per four-connected atom ({len(tetrahedral)}); got {len(signs)}"
            )
        legacy = dict(zip(tetrahedral, signs))
        # legacy sign = chi(neighbours in index order); chi alternates under reordering
        return np.array(
            [legacy[c] * permutation_parity(sub, sorted(sub)) for c, sub in zip(self.centers, self.substituents)],
            dtype=int,
        )

    # ------------------------------------------------------------------ storage
    def to_dict(self):
        """``{"convention", "centers", "signs"}``, JSON-serialisable (see :meth:`from_dict`)."""
        signs = None if self.reference_signs is None else [int(s) for s in self.reference_signs]
        return {"convention": CONVENTION, "centers": [int(c) for c in self.centers], "signs": signs}

    @classmethod
    def from_dict(cls, graph, d):
        """Rebuild from :meth:`to_dict`'s output, or from a plain list of legacy signs."""
        if isinstance(d, dict):
            return cls(graph, d.get("signs"), d.get("convention", CONVENTION), d.get("centers"))
        # openmm-arbg 0.1 checked every four-connected atom: its models target the reference's
        # labelling of equivalent atoms too (exact for observables invariant under permuting
        # them), and were trained on one labelling only, so they keep that target
        g = MolecularGraph.from_topology(graph)
        tetrahedral = [i for i in range(g.n_atoms) if len(g.neighbors[i]) == 4]
        return cls(graph, d, LEGACY_CONVENTION, centers=tetrahedral)

    # ------------------------------------------------------------------ handedness
    def signs(self, positions):
        """Handedness (+1/-1) of each stereocentre, shape (n, n_centers)."""
        x = np.asarray(positions, dtype=float)
        if x.ndim == 2:
            x = x[None]
        if not self.centers:
            return np.zeros((len(x), 0), dtype=int)
        c = np.array(self.centers)
        nb = np.array([sub[:3] for sub in self.substituents])
        v = x[:, nb, :] - x[:, c, None, :]
        return np.where(np.linalg.det(v) > 0, 1, -1)

    def record(self, reference_positions):
        """Record the handedness of a reference configuration (N, 3) nm."""
        self.reference_signs = self.signs(np.asarray(reference_positions, dtype=float)[None])[0]
        return self

    def check(self, positions):
        """Boolean mask, shape (n,): True where every stereocentre has the reference handedness."""
        if self.reference_signs is None:
            raise RuntimeError("no reference stereochemistry recorded; call record(reference_positions)")
        return (self.signs(positions) == self.reference_signs[None, :]).all(axis=1)
