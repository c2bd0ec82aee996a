"""Molecular graph: the part of a topology the model needs, with a stable fingerprint.

The graph is built from an OpenMM or mdtraj topology and can be written to and read from
plain JSON (no pickling), so a checkpoint can rebuild it without the original files.
"""

import hashlib
import json
from collections import deque

import numpy as np

__all__ = ["MolecularGraph", "check_same_molecule", "check_bond_lengths", "backbone_dihedral_indices", "named_dihedrals", "side_chain_dihedrals", "dihedral_indices"]


class MolecularGraph:
    """Atoms, residues and bonds of one molecule.

    Parameters
    ----------
    atoms : list of dict
        One dict per atom with keys ``name``, ``element`` (symbol, e.g. ``"C"``), ``resname``,
        ``resSeq`` (int) and ``chain`` (int).
    bonds : list of (int, int)
        Bonded atom index pairs.
    """

    def __init__(self, atoms, bonds):
        self.atoms = [dict(a) for a in atoms]
        self.bonds = sorted({(min(int(i), int(j)), max(int(i), int(j))) for i, j in bonds})
        n = len(self.atoms)
        if n < 3:
            raise ValueError(f"a molecule needs at least 3 atoms to have a shape; got {n}")
        self.neighbors = [[] for _ in range(n)]
        for i, j in self.bonds:
            if not (0 <= i < n and 0 <= j < n) or i == j:
                raise ValueError(f"bond ({i}, {j}) does not join two distinct atoms of {n}")
            self.neighbors[i].append(j)
            self.neighbors[j].append(i)
        for nb in self.neighbors:
            nb.sort()
        self._check_connected()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_topology(cls, topology):
        """Build from an ``openmm.app.Topology`` or ``mdtraj.Topology``."""
        import mdtraj

        if isinstance(topology, MolecularGraph):
            return topology
        if isinstance(topology, mdtraj.Trajectory):
            topology = topology.topology
        if not isinstance(topology, mdtraj.Topology):
            try:
                topology = mdtraj.Topology.from_openmm(topology)
            except Exception as exc:  # pragma: no cover - depends on input type
                raise TypeError(
                    "topology must be an openmm.app.Topology or mdtraj.Topology, "
                    f"got {type(topology).__name__}"
                ) from exc
        if topology.n_bonds == 0 and topology.n_atoms > 1:
            topology.create_standard_bonds()
        atoms = []
        for atom in topology.atoms:
            element = atom.element.symbol if atom.element is not None else "X"
            atoms.append(
                dict(
                    name=atom.name,
                    element=element,
                    resname=atom.residue.name,
                    resSeq=int(atom.residue.resSeq),
                    chain=int(atom.residue.chain.index),
                )
            )
        bonds = [(b[0].index, b[1].index) for b in topology.bonds]
        return cls(atoms, bonds)

    def to_dict(self):
        return {"atoms": self.atoms, "bonds": [list(b) for b in self.bonds]}

    @classmethod
    def from_dict(cls, d):
        return cls(d["atoms"], [tuple(b) for b in d["bonds"]])

    def to_mdtraj(self):
        """Rebuild an ``mdtraj.Topology`` (atoms, residues, chains, bonds)."""
        import mdtraj

        top = mdtraj.Topology()
        chains, residues = {}, {}
        for a in self.atoms:
            if a["chain"] not in chains:
                chains[a["chain"]] = top.add_chain()
            key = (a["chain"], a["resSeq"], a["resname"])
            if key not in residues:
                residues[key] = top.add_residue(a["resname"], chains[a["chain"]], resSeq=a["resSeq"])
            element = mdtraj.element.get_by_symbol(a["element"]) if a["element"] != "X" else None
            top.add_atom(a["name"], element, residues[key])
        atoms = list(top.atoms)
        for i, j in self.bonds:
            top.add_bond(atoms[i], atoms[j])
        return top

    # ------------------------------------------------------------------ properties
    @property
    def n_atoms(self):
        return len(self.atoms)

    @property
    def elements(self):
        return [a["element"] for a in self.atoms]

    def is_heavy(self, i):
        return self.atoms[i]["element"] not in ("H", "D")

    def fingerprint(self):
        """SHA-256 of atom names, elements, residues and bonds, in order."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def describe_atom(self, i):
        a = self.atoms[i]
        return f"{a['resname']}{a['resSeq']}:{a['name']} (index {i})"

    # ------------------------------------------------------------------ graph algorithms
    def _check_connected(self):
        seen = {0}
        queue = deque([0])
        while queue:
            i = queue.popleft()
            for j in self.neighbors[i]:
                if j not in seen:
                    seen.add(j)
                    queue.append(j)
        if len(seen) != self.n_atoms:
            missing = sorted(set(range(self.n_atoms)) - seen)[:5]
            raise ValueError(
                "the bond graph is not connected (e.g. atoms "
                + ", ".join(self.describe_atom(i) for i in missing)
                + " are not bonded to atom 0). openmm-arbg models one molecule; pass a topology "
                "with bonds (PDB CONECT records, or mdtraj's create_standard_bonds)."
            )

    def shortest_paths(self, source):
        dist = np.full(self.n_atoms, -1, dtype=int)
        dist[source] = 0
        queue = deque([source])
        while queue:
            i = queue.popleft()
            for j in self.neighbors[i]:
                if dist[j] < 0:
                    dist[j] = dist[i] + 1
                    queue.append(j)
        return dist

    def default_anchors(self):
        """Three bonded atoms (a, b, c) near the centre of the molecule.

        ``a`` is the heavy atom with at least two bonded neighbours that minimises the largest
        graph distance to any atom (the graph centre; ties broken by degree, then index).
        ``b`` and ``c`` are two neighbours of ``a``, heavy atoms first.
        """
        candidates = [i for i in range(self.n_atoms) if len(self.neighbors[i]) >= 2]
        if not candidates:
            raise ValueError("no atom has two bonded neighbours; cannot choose anchor atoms")
        heavy = [i for i in candidates if self.is_heavy(i)] or candidates

        def key(i):
            return (self.shortest_paths(i).max(), -len(self.neighbors[i]), i)

        a = min(heavy, key=key)
        nbrs = sorted(self.neighbors[a], key=lambda j: (not self.is_heavy(j), -len(self.neighbors[j]), j))
        return a, nbrs[0], nbrs[1]

    def residues(self):
        """The residues in order: a list of ``(resname, atom indices)``, one per run of atoms with
        the same chain, residue number and name."""
        out, last = [], None
        for i, a in enumerate(self.atoms):
            key = (a["chain"], a["resSeq"], a["resname"])
            if key != last:
                out.append((a["resname"], []))
                last = key
            out[-1][1].append(i)
        return out

    def residue_order(self):
        """A canonical order, residue by residue: anchors and ``prefix`` for :meth:`traversal_order`.

        The same residue type gives the same order of its atoms in every molecule, whatever the
        atoms' indices, so coordinates line up across peptides (transferable models). The anchors
        are three atoms of the first residue (for an acetyl cap: ``C``, ``CH3``, ``O``); then, for
        each residue in turn, its heavy atoms (the backbone ``N CA C O`` first, then the side chain
        by remoteness ``B G D E Z H``), each taken from the frontier of atoms bonded to those
        already placed, and then its hydrogens, in the order of the atoms that carry them.

        Returns
        -------
        anchors : (int, int, int)
        prefix : list of (atom, parent)
            Every other atom, each bonded to its ``parent`` placed before it.
        """
        residues = self.residues()
        rank = [_atom_name_rank(a["name"]) for a in self.atoms]
        first = residues[0][1]
        centres = [i for i in first if self.is_heavy(i) and len(self.neighbors[i]) >= 2] or [
            i for i in first if len(self.neighbors[i]) >= 2]
        if not centres:
            raise ValueError(f"the first residue ({self.atoms[first[0]]['resname']}) has no atom with two bonded neighbours "
                             "to anchor a residue-by-residue order")
        in_first = set(first)
        a = min(centres, key=lambda i: rank[i])
        b, c = sorted(self.neighbors[a], key=lambda j: (j not in in_first, not self.is_heavy(j), rank[j], j))[:2]
        order, position = [a, b, c], {a: 0, b: 1, c: 2}
        prefix = []

        def place(atom):
            parent = min((j for j in self.neighbors[atom] if j in position), key=position.__getitem__)
            position[atom] = len(order)
            order.append(atom)
            prefix.append((atom, parent))

        for _, members in residues:
            for heavy in (True, False):
                while True:
                    frontier = [i for i in members if i not in position and self.is_heavy(i) == heavy
                                and any(j in position for j in self.neighbors[i])]
                    if not frontier:
                        break
                    if heavy:
                        place(min(frontier, key=lambda i: (rank[i], i)))
                    else:
                        place(min(frontier, key=lambda i: (min(position[j] for j in self.neighbors[i] if j in position), rank[i], i)))
        while len(order) < self.n_atoms:  # atoms reachable only through a later residue (not in a linear peptide)
            place(min((i for i in range(self.n_atoms) if i not in position
                       and any(j in position for j in self.neighbors[i])), key=lambda i: (rank[i], i)))
        return (a, b, c), prefix

    def traversal_order(self, anchors, prefix=()):
        """Breadth-first order starting with the anchor atoms: heavy atoms first, then hydrogens.

        Parameters
        ----------
        anchors : (int, int, int)
            Atoms ``(a, b, c)`` with ``b`` and ``c`` bonded to ``a``; they come first.
        prefix : sequence of (atom, parent)
            Atoms placed right after the anchors, in this order, each bonded to its ``parent``
            placed before it (e.g. to make chosen torsions the first model coordinates).

        Returns
        -------
        order : list of int
            Every atom once; each atom's ``parent`` precedes it.
        parent : numpy.ndarray of int
            Bonded atom through which each atom was reached (``-1`` for ``a``).
        """
        a, b, c = (int(x) for x in anchors)
        parent = np.full(self.n_atoms, -1, dtype=int)
        parent[b] = a
        parent[c] = a
        order = [a, b, c]
        for atom, p in prefix:
            atom, p = int(atom), int(p)
            if atom in order or p not in order or atom not in self.neighbors[p]:
                raise ValueError(f"cannot place {self.describe_atom(atom)} after {[self.describe_atom(i) for i in order]} "
                                 f"from {self.describe_atom(p)}")
            parent[atom] = p
            order.append(atom)
        seen = set(order)

        def grow(heavy_only):
            queue = deque(order)
            while queue:
                i = queue.popleft()
                for j in self.neighbors[i]:
                    if j not in seen and (self.is_heavy(j) or not heavy_only):
                        seen.add(j)
                        parent[j] = i
                        order.append(j)
                        queue.append(j)

        grow(heavy_only=True)
        grow(heavy_only=False)
        return order, parent


_BACKBONE_NAMES = ("N", "CA", "C", "O", "OXT", "CH3", "H", "HA", "HA2", "HA3")
_REMOTENESS = "ABGDEZH"


def _atom_name_rank(name):
    """Sort key of a PDB atom name that is the same in every residue of a type: backbone names
    first, then by remoteness letter (``CB`` < ``CG1`` < ``CD``) and the name itself."""
    if name in _BACKBONE_NAMES:
        return (0, _BACKBONE_NAMES.index(name), name)
    letter = name[1] if len(name) > 1 else ""
    return (1, _REMOTENESS.index(letter) if letter and letter in _REMOTENESS else len(_REMOTENESS), name)


def check_same_molecule(expected, other, what="topology"):
    """Raise ``ValueError`` unless ``other`` is the molecule ``expected`` (same atoms, in the same
    order, and bonds), naming the first difference."""
    if other.fingerprint() == expected.fingerprint():
        return
    if other.n_atoms != expected.n_atoms:
        diff = f"{other.n_atoms} atoms instead of {expected.n_atoms}"
    else:
        diff = "the bonds differ"
        for i, (a, b) in enumerate(zip(expected.atoms, other.atoms)):
            if (a["name"], a["element"], a["resname"]) != (b["name"], b["element"], b["resname"]):
                diff = (
                    f"atom {i} is {b['resname']}:{b['name']} ({b['element']}), "
                    f"expected {a['resname']}:{a['name']} ({a['element']})"
                )
                break
    raise ValueError(f"{what} does not match the model's molecule: {diff}")


def check_bond_lengths(frames, graph, reference, what="the trajectory", source="the topology", tolerance_nm=0.03, n_first=10):
    """Raise ``ValueError`` unless the frames' atoms are the topology's atoms in the same order,
    checked bond by bond: the median length of every bonded pair over the first ``n_first``
    frames (nm) must be within ``tolerance_nm`` of its length in ``reference``, the topology
    file's own structure (N, 3) nm. A topology that lists atoms in another order than the
    trajectory (same atom count, bonds that still look plausible) breaks some bonds by far more
    than thermal motion (about 0.005 nm at 300-600 K). Equivalent atoms listed in another order
    (the hydrogens of a methyl group) keep every bond length and pass, as they should. Skipped if
    ``reference`` does not look like a structure in nm (median bond length outside 0.05-0.5 nm)."""
    if not graph.bonds or reference is None:
        return
    ref = np.asarray(reference, dtype=float).reshape(graph.n_atoms, 3)
    i, j = np.array(graph.bonds).T
    ref_lengths = np.linalg.norm(ref[i] - ref[j], axis=-1)
    if not 0.05 < float(np.median(ref_lengths)) < 0.5:
        return
    x = np.asarray(frames[:n_first], dtype=float)
    lengths = np.median(np.linalg.norm(x[:, i] - x[:, j], axis=-1), axis=0)
    off = np.abs(lengths - ref_lengths)
    bad = np.flatnonzero(~(off <= tolerance_nm))
    if len(bad):
        k = int(bad[np.argmax(off[bad])])
        raise ValueError(
            f"{len(bad)} of {len(i)} bonds of {what} differ from their length in {source} by more than {tolerance_nm} nm "
            f"(e.g. {graph.describe_atom(i[k])} - {graph.describe_atom(j[k])}: {lengths[k]:.3f} nm in the first frames, "
            f"{ref_lengths[k]:.3f} nm in {source}): the topology lists the atoms in another atom order than the trajectory, "
            "or is another molecule. Use the topology file written with the trajectory"
        )


# ---------------------------------------------------------------------- named dihedrals
def _as_mdtraj(topology):
    import mdtraj

    if isinstance(topology, mdtraj.Topology):
        return topology
    if isinstance(topology, MolecularGraph):
        return topology.to_mdtraj()
    return mdtraj.Topology.from_openmm(topology)


def backbone_dihedral_indices(topology):
    """Atom quadruples of the backbone dihedrals: ``(phi, psi)``, two int arrays (n_phi, 4) and
    (n_psi, 4), as mdtraj defines them (a residue has phi if the previous one has a C, psi if the
    next one has an N)."""
    from mdtraj.geometry.dihedral import indices_phi, indices_psi

    top = _as_mdtraj(topology)
    return np.asarray(indices_phi(top), dtype=int).reshape(-1, 4), np.asarray(indices_psi(top), dtype=int).reshape(-1, 4)


def named_dihedrals(topology, side_chains=False):
    """Backbone dihedrals by name: ``phiK``/``psiK`` -> atom quadruple (K the residue's 1-based
    position in the topology), and ``phi``/``psi`` for the first residue that has one; with
    ``side_chains``, also :func:`side_chain_dihedrals`' ``chiN_K``."""
    top = _as_mdtraj(topology)
    phi, psi = backbone_dihedral_indices(top)
    out = {}
    for name, idx, atom in (("phi", phi, 2), ("psi", psi, 1)):
        for quad in idx:
            out[f"{name}{top.atom(int(quad[atom])).residue.index + 1}"] = [int(a) for a in quad]
        if len(idx):
            out[name] = [int(a) for a in idx[0]]
    if side_chains:
        out.update(side_chain_dihedrals(top))
    return out


def side_chain_dihedrals(topology):
    """Side-chain dihedrals by name: ``chiN_K`` -> atom quadruple, chi1 to chi4 of residue K
    (1-based position in the topology) as mdtraj defines them (chi1 is N-CA-CB-XG: every residue
    but Gly and Ala has one; ``chi1_2`` is residue 2's chi1)."""
    from mdtraj.geometry import dihedral as mdd

    top = _as_mdtraj(topology)
    out = {}
    for n in (1, 2, 3, 4):
        for quad in np.asarray(getattr(mdd, f"indices_chi{n}")(top), dtype=int).reshape(-1, 4):
            out[f"chi{n}_{top.atom(int(quad[1])).residue.index + 1}"] = [int(a) for a in quad]
    return out


def dihedral_indices(topology, names):
    """Atom quadruples (m, 4) from names: ``"phi"``/``"psi"`` (the first residue that has one),
    ``"phiK"``/``"psiK"`` (residue K, from 1; :func:`named_dihedrals`), ``"chiN_K"`` (side chains;
    :func:`side_chain_dihedrals`), ``"i,j,k,l"`` (0-based atom
    indices) or a sequence of four ints. Raises ``ValueError`` for anything else."""
    top = _as_mdtraj(topology)
    named = None
    out = []
    for name in names:
        if not isinstance(name, str):
            atoms = [int(a) for a in name]
        elif name[:3] in ("phi", "psi", "chi"):
            named = named_dihedrals(top, side_chains=True) if named is None else named
            if name not in named:
                known = ", ".join(k for k in named if k[-1].isdigit()) or "none"
                raise ValueError(f"the molecule has no dihedral {name!r} (it has: {known}); give atom indices as i,j,k,l")
            out.append(named[name])
            continue
        else:
            try:
                atoms = [int(a) for a in name.split(",")]
            except ValueError:
                atoms = []
        if len(atoms) != 4 or not all(0 <= a < top.n_atoms for a in atoms):
            raise ValueError(
                f"dihedral {name!r}: give phi, psi, phiK, psiK, chiN_K (K the residue, from 1) or four atom indices "
                f"(0-based, < {top.n_atoms}) as i,j,k,l"
            )
        out.append(atoms)
    return np.array(out, dtype=int).reshape(-1, 4)
