"""Exact bijections between molecular shapes and the model's 3N-6 coordinates.

Positions are in nm. Both representations remove the six rigid-body degrees of freedom with the
same canonical frame fixed by three bonded anchor atoms ``(a, b, c)``: ``a`` at the origin, ``b``
on the +x axis, ``c`` in the xy-plane with y > 0. The Lebesgue measure factorises as

    d^{3N} x = d^3 t  dR  exp(log_volume(z))  d^{3N-6} z

with the same rigid-body measure ``d^3 t dR`` for both representations, so a density ``q_z`` over
model coordinates defines the shape density ``q(x) = q_z(z) / exp(log_volume(z))`` in the measure
in which ``exp(-u(x))`` is the Boltzmann density (``docs/design.md``).

* :class:`CartesianRepresentation` (the ArBG paper's choice): ``z = (x_b, x_c, y_c, x_d, y_d,
  z_d, ...)`` and ``log_volume = 2 log x_b + log y_c``.
* :class:`InternalRepresentation` (bgflow's choice): a Z-matrix of bonds (nm), angles (rad) and
  periodic torsions (rad), ``log_volume = sum_i 2 log r_i + log sin(theta_i)``. With
  ``stereo="relative-torsion"`` the handedness of every stereocentre is built in: the torsions of
  the centre's substituents after the first are measured relative to a sibling substituent and
  stored as ``sign * dihedral`` in ``(0, pi)`` (kind ``"half_torsion"``), so a density on the
  coordinates lives on shapes with the reference's handedness only.

All maps are batched torch functions in float64 so that Jacobians can be checked by autograd.
"""

import math

import numpy as np
import torch

from .topology import MolecularGraph

__all__ = [
    "CartesianRepresentation",
    "InternalRepresentation",
    "canonical_frame",
    "place_in_frame",
    "to_local_frame",
    "build_representation",
    "plan_first_torsions",
    "COORDINATE_KINDS",
    "HALF_TORSION",
    "RELATIVE_TORSION",
]

# Coordinate kinds: the discretizer's support for each model coordinate.
UNBOUNDED = "unbounded"  # (-inf, inf)
POSITIVE = "positive"  # (0, inf): bond lengths, x_b, y_c
ANGLE = "angle"  # (0, pi): bond angles
PERIODIC = "periodic"  # [-pi, pi): torsions
HALF_TORSION = "half_torsion"  # (0, pi): sign * torsion relative to a sibling substituent of a stereocentre
# new kinds go at the end: a kind's index is part of the coordinate features of trained networks
COORDINATE_KINDS = [UNBOUNDED, POSITIVE, ANGLE, PERIODIC, HALF_TORSION]
RESIDUE_ORDER = "residue"  # atoms residue by residue, canonically (transferable models)
ORDERS = (None, RESIDUE_ORDER)  # None: breadth-first from anchors near the centre

RELATIVE_TORSION = "relative-torsion"  # InternalRepresentation's stereo scheme
SIBLING = "sibling"  # later substituents of every branch atom measured from their earliest placed sibling
BRANCHES = (None, SIBLING)

_EPS = 1e-12


def _unit(v):
    return v / torch.linalg.norm(v, dim=-1, keepdim=True).clamp_min(_EPS)


def canonical_frame(positions, anchors):
    """Origin and rotation of the canonical frame of each configuration.

    Parameters
    ----------
    positions : torch.Tensor, shape (n, N, 3), nm
    anchors : (int, int, int)

    Returns
    -------
    origin : torch.Tensor, shape (n, 3)
        Position of anchor ``a``.
    rotation : torch.Tensor, shape (n, 3, 3)
        Rows are the frame's unit axes in lab coordinates, so ``local = (x - origin) @ R.T``
        and ``x = origin + local @ R``.
    """
    a, b, c = anchors
    origin = positions[:, a]
    e1 = _unit(positions[:, b] - origin)
    v = positions[:, c] - origin
    e2 = _unit(v - (v * e1).sum(-1, keepdim=True) * e1)
    e3 = torch.cross(e1, e2, dim=-1)
    return origin, torch.stack([e1, e2, e3], dim=1)


def place_in_frame(local, origin, rotation):
    """Inverse of the canonical frame: ``x = origin + local @ R``."""
    return origin[:, None, :] + local @ rotation


def to_local_frame(positions, anchors):
    """Positions (n, N, 3) expressed in their own canonical frame."""
    origin, rotation = canonical_frame(positions, anchors)
    return (positions - origin[:, None, :]) @ rotation.transpose(1, 2)


def _angle(p0, p1, p2):
    """Angle p0-p1-p2 in rad."""
    u = _unit(p0 - p1)
    v = _unit(p2 - p1)
    return torch.atan2(torch.linalg.norm(torch.cross(u, v, dim=-1), dim=-1), (u * v).sum(-1))


def _dihedral(p0, p1, p2, p3):
    """Dihedral p0-p1-p2-p3 in rad, in [-pi, pi] (IUPAC sign convention)."""
    b0 = p0 - p1
    b1 = _unit(p2 - p1)
    b2 = p3 - p2
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    x = (v * w).sum(-1)
    y = (torch.cross(b1, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def _place_atom(pj, pk, pl, r, theta, phi):
    """Position of atom i from bond r = |i-j|, angle (i, j, k) and dihedral (i, j, k, l)."""
    bc = _unit(pj - pk)
    n = _unit(torch.cross(pk - pl, bc, dim=-1))
    m = torch.cross(n, bc, dim=-1)
    d0 = -r * torch.cos(theta)
    d1 = r * torch.sin(theta) * torch.cos(phi)
    d2 = r * torch.sin(theta) * torch.sin(phi)
    return pj + d0[:, None] * bc + d1[:, None] * m + d2[:, None] * n


class _Representation:
    """Common parts: anchors, atom order, coordinate metadata, serialisation."""

    kind = None

    def __init__(self, graph, anchors=None, prefix=()):
        self.graph = MolecularGraph.from_topology(graph)
        if anchors is None:
            anchors = self.graph.default_anchors()
        anchors = tuple(int(i) for i in anchors)
        a, b, c = anchors
        n = self.graph.n_atoms
        if len(set(anchors)) != 3 or not all(0 <= i < n for i in anchors):
            raise ValueError(f"anchors must be three distinct atom indices in [0, {n}); got {anchors}")
        if b not in self.graph.neighbors[a] or c not in self.graph.neighbors[a]:
            raise ValueError(
                f"anchor atoms b={self.graph.describe_atom(b)} and c={self.graph.describe_atom(c)} "
                f"must both be bonded to a={self.graph.describe_atom(a)}"
            )
        self.anchors = anchors
        self.order, self.parent = self.graph.traversal_order(anchors, prefix)
        self.n_atoms = n
        self.n_coords = 3 * n - 6

    # metadata used by the discretizer and the network
    coordinate_kinds = None  # list of str, one per model coordinate
    coordinate_atoms = None  # atom index whose placement each coordinate describes
    coordinate_roles = None  # small int per coordinate: axis (x, y, z) or (bond, angle, torsion)

    def to_dict(self):
        return {"kind": self.kind, "anchors": list(self.anchors)}

    def frame(self, positions):
        """Canonical-frame origin and rotation of each configuration (see :func:`canonical_frame`)."""
        return canonical_frame(positions, self.anchors)


class CartesianRepresentation(_Representation):
    """Cartesian coordinates of every atom in the canonical anchor frame (ArBG paper).

    Model coordinates, in nm: ``(x_b, x_c, y_c)`` and then ``(x, y, z)`` of every other atom in
    breadth-first order from the anchors. ``log_volume = 2 log x_b + log y_c``.
    """

    kind = "cartesian"

    def __init__(self, graph, anchors=None):
        super().__init__(graph, anchors)
        self.others = [i for i in self.order if i not in self.anchors]
        a, b, c = self.anchors
        self.coordinate_kinds = [POSITIVE, UNBOUNDED, POSITIVE] + [UNBOUNDED] * (3 * len(self.others))
        self.coordinate_atoms = [b, c, c] + [i for i in self.others for _ in range(3)]
        self.coordinate_roles = [0, 0, 1] + [0, 1, 2] * len(self.others)

    def to_model_coordinates(self, positions):
        """Positions (n, N, 3) nm -> model coordinates (n, 3N-6) and log_volume (n,)."""
        a, b, c = self.anchors
        local = to_local_frame(positions, self.anchors)
        z = torch.cat([local[:, b, :1], local[:, c, :2], local[:, self.others].reshape(len(local), -1)], dim=1)
        return z, self.log_volume(z)

    def from_model_coordinates(self, z):
        """Model coordinates (n, 3N-6) -> positions (n, N, 3) nm in the canonical frame, log_volume."""
        a, b, c = self.anchors
        local = z.new_zeros((z.shape[0], self.n_atoms, 3))
        local[:, b, 0] = z[:, 0]
        local[:, c, 0] = z[:, 1]
        local[:, c, 1] = z[:, 2]
        local[:, self.others] = z[:, 3:].reshape(z.shape[0], -1, 3)
        return local, self.log_volume(z)

    @staticmethod
    def log_volume(z):
        return 2.0 * torch.log(z[:, 0]) + torch.log(z[:, 2])


class InternalRepresentation(_Representation):
    """Z-matrix internal coordinates: bonds (nm), angles (rad), torsions (rad).

    Atom ``b`` has a bond to ``a``; ``c`` a bond to ``a`` and the angle ``c-a-b``; every later
    atom ``i`` (breadth-first from the anchors, heavy atoms first) a bond to its parent ``j``, an
    angle ``i-j-k`` and a torsion ``i-j-k-l`` with ``j, k, l`` placed before ``i``.
    ``log_volume = sum_i 2 log r_i + sum_i log sin(theta_i)``.

    Stereochemistry by construction (``stereo="relative-torsion"``): for a row whose parent ``j``
    is a stereocentre (:func:`~openmm_arbg.molecule.stereochemistry.find_stereocentres`) and that
    has a sibling, a neighbour ``s`` of ``j`` other than ``k`` placed before ``i`` (the earliest
    placed one), the torsion is ``i-j-k-s``. Its sign is the sign of
    ``det(x_k - x_j, x_i - x_j, x_s - x_j)``, the handedness of the centre; the model coordinate is
    ``sign_ref * dihedral`` with ``sign_ref`` the reference structure's sign, of kind
    ``"half_torsion"`` with support ``(0, pi)``. The sign flip has Jacobian 1 and torsions add
    nothing to ``log_volume``, so a density normalised on ``(0, pi)`` for these coordinates is a
    normalised density on shapes whose stereocentres all have the reference's handedness, and
    mirror images are outside the support. The first substituent placed from a centre keeps a
    periodic torsion (it fixes the rotation about ``j-k``); each later one is placed on its own
    side of the plane ``k-j-s``.

    Parameters
    ----------
    graph : MolecularGraph or topology
    anchors : (int, int, int), optional
    stereo : {None, "relative-torsion"}
        ``None``: every torsion periodic (the Z-matrix of the models shipped with openmm-arbg 0.2
        and earlier, kept bit for bit). ``"relative-torsion"``: handedness by construction; needs
        ``signs`` or ``reference_positions``.
    stereocentres : sequence of int, optional
        Default :func:`~openmm_arbg.molecule.stereochemistry.find_stereocentres`; stored models
        keep their own.
    signs : sequence of int, optional
        +1/-1 per half-torsion row, in row order (as stored by :meth:`to_dict`).
    reference_positions : array_like (N, 3) nm, optional
        Structure whose handedness the coordinates encode (e.g. the first training frame).
    first_torsions : sequence of (i, j, k, l), optional
        Dihedrals (bonded chains of four atoms) that become periodic model coordinates (see
        :func:`plan_first_torsions`), and by default the first coordinates of the model's order
        (``leading``). :meth:`torsion_coordinate` says which coordinate a dihedral is.
    leading : sequence of int, optional
        Z-matrix columns (``0..3N-7``: anchors' three, then bond, angle, torsion of each row)
        generated first, in this order; the other columns follow in Z-matrix order. Default: the
        torsion columns of ``first_torsions``, so fixing them conditions every other coordinate
        on them (fixing a later coordinate draws the earlier ones from their marginal, a poor
        proposal where they correlate with it, e.g. the backbone angles at a torsion barrier).
        ``[]`` keeps the Z-matrix order (models stored without this setting).
    order : {None, "residue"}
        ``"residue"``: the canonical residue-by-residue order of
        :meth:`~openmm_arbg.molecule.topology.MolecularGraph.residue_order` (anchors included), so
        the same residue gives the same rows in every peptide (transferable models).
    branches : {None, "sibling"}
        ``"sibling"``: the torsion of every later substituent of any branch atom ``j`` (not only of
        a stereocentre) is measured from the earliest placed sibling, ``i-j-k-s``, a periodic
        coordinate near +-120 degrees whatever the rotation about ``j-k``. With ``None`` (models
        stored without this setting) it is ``i-j-k-l`` with ``l`` a neighbour of ``k``, so every
        substituent repeats the rotation about ``j-k``: the hydrogens of a CH2 group (Leu HB2/HB3
        against N) follow chi1, and the network must learn that shift for each rotamer, from few
        frames for a rare one. The bijection is as exact either way (torsions add nothing to
        ``log_volume``).
    """

    kind = "internal"

    def __init__(self, graph, anchors=None, stereo=None, stereocentres=None, signs=None, reference_positions=None,
                 first_torsions=None, order=None, leading=None, branches=None):
        graph = MolecularGraph.from_topology(graph)
        if branches not in BRANCHES:
            raise ValueError(f"branches must be one of {BRANCHES}; got {branches!r}")
        self.branches = branches
        self.first_torsions = [[int(a) for a in t] for t in (first_torsions or [])]
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}; got {order!r}")
        self.atom_order = order
        prefix, self._forced_rows = (), {}
        if order == RESIDUE_ORDER:
            if self.first_torsions:
                raise ValueError("first_torsions and the residue-by-residue order exclude each other: choose one")
            anchors, prefix = graph.residue_order()
        if self.first_torsions:
            anchors, prefix, self._forced_rows = plan_first_torsions(graph, self.first_torsions, anchors)
        super().__init__(graph, anchors, prefix)
        if stereo not in (None, RELATIVE_TORSION):
            raise ValueError(f"stereo must be None or {RELATIVE_TORSION!r}; got {stereo!r}")
        self.stereo = stereo
        if stereo is None:
            if stereocentres is not None or signs is not None or reference_positions is not None:
                raise ValueError(f"stereocentres, signs and reference_positions need stereo={RELATIVE_TORSION!r}")
            self.stereocentres = []
        elif stereocentres is None:
            from .stereochemistry import find_stereocentres

            self.stereocentres = find_stereocentres(self.graph)
        else:
            self.stereocentres = sorted(int(c) for c in stereocentres)
            bad = [c for c in self.stereocentres if not (0 <= c < self.n_atoms and len(self.graph.neighbors[c]) == 4)]
            if bad:
                raise ValueError(f"stereocentres must be atoms with four bonded neighbours; got {bad}")
        self.zmatrix, half = self._build_zmatrix(set(self.stereocentres))
        self.half_rows = [r for r, h in enumerate(half) if h]
        if stereo is not None:
            if signs is None:
                if reference_positions is None:
                    raise ValueError(
                        f"stereo={RELATIVE_TORSION!r} needs the reference signs or reference_positions (N, 3) nm"
                    )
                signs = self._reference_signs(reference_positions)
            signs = [int(s) for s in np.asarray(signs).reshape(-1)]
            if len(signs) != len(self.half_rows) or any(s not in (-1, 1) for s in signs):
                raise ValueError(f"expected one sign (+1 or -1) per half torsion ({len(self.half_rows)}); got {signs}")
        self.signs = [] if signs is None else signs
        sign_of_row = np.ones(len(self.zmatrix))
        sign_of_row[self.half_rows] = self.signs
        self._row_signs = torch.as_tensor(sign_of_row, dtype=torch.float64)
        a, b, c = self.anchors
        kinds, atoms, roles = [POSITIVE, POSITIVE, ANGLE], [b, c, c], [0, 0, 1]
        for (i, _, _, _), h in zip(self.zmatrix, half):
            kinds += [POSITIVE, ANGLE, HALF_TORSION if h else PERIODIC]
            atoms += [i, i, i]
            roles += [0, 1, 2]
        if leading is None:
            leading = [self._zmatrix_torsion_column(t) for t in self.first_torsions]
        leading = [int(c) for c in leading]
        if len(set(leading)) != len(leading) or not all(0 <= c < self.n_coords for c in leading):
            raise ValueError(f"leading must be distinct Z-matrix columns in [0, {self.n_coords}); got {leading}")
        self.leading = leading
        first = set(leading)
        rest = [c for c in range(self.n_coords) if c not in first]
        self._columns = torch.as_tensor(leading + rest, dtype=torch.long)  # model coordinate m is column _columns[m]
        self._position = torch.argsort(self._columns)  # column c is model coordinate _position[c]
        cols = self._columns.tolist()
        self.coordinate_kinds = [kinds[c] for c in cols]
        self.coordinate_atoms = [atoms[c] for c in cols]
        self.coordinate_roles = [roles[c] for c in cols]
        self.half_torsion_columns = [int(self._position[5 + 3 * r]) for r in self.half_rows]

    def _zmatrix_torsion_column(self, dihedral):
        t = tuple(int(a) for a in dihedral)
        half = set(self.half_rows)
        for row, quad in enumerate(self.zmatrix):
            if row not in half and (quad == t or quad == t[::-1]):
                return 5 + 3 * row
        return None

    def model_order(self, columns):
        """Z-matrix-ordered coordinates (n, 3N-6) -> the model's order (the identity unless ``leading``)."""
        return columns[:, self._columns] if self.leading else columns

    def zmatrix_order(self, z):
        """Model coordinates (n, 3N-6) -> Z-matrix order (inverse of :meth:`model_order`)."""
        return z[:, self._position] if self.leading else z

    def coordinate_atom_tuples(self):
        """The atoms that define each model coordinate, in the model's order: ``(i, j)`` for a
        bond (distance of ``i`` from ``j``), ``(i, j, k)`` for an angle at ``j``, ``(i, j, k, l)``
        for a torsion."""
        a, b, c = self.anchors
        tuples = [(b, a), (c, a), (c, a, b)]
        for i, j, k, l in self.zmatrix:
            tuples += [(i, j), (i, j, k), (i, j, k, l)]
        return [tuples[c] for c in self._columns.tolist()]

    def _build_zmatrix(self, stereocentres):
        g = self.graph
        rank = {atom: r for r, atom in enumerate(self.order)}
        rows, half = [], []
        for r, i in enumerate(self.order[3:], start=3):
            j = int(self.parent[i])
            if i in self._forced_rows:  # a chosen dihedral: exactly this torsion, periodic
                rows.append((i, j, *self._forced_rows[i]))
                half.append(False)
                continue

            def placed(x, exclude):
                return x >= 0 and rank[x] < r and x not in exclude

            cands = [int(self.parent[j])] + g.neighbors[j]
            k = next((x for x in cands if placed(x, (i, j))), None)
            siblings = [x for x in g.neighbors[j] if placed(x, (i, j, k))]
            if siblings and (j in stereocentres or self.branches == SIBLING):
                # torsion relative to the earliest placed sibling: at a stereocentre it carries the handedness
                l = min(siblings, key=rank.__getitem__)
            else:
                cands = [int(self.parent[k])] + g.neighbors[k] + g.neighbors[j]
                l = next((x for x in cands if placed(x, (i, j, k))), None)
            if k is None or l is None:  # pragma: no cover - impossible for a connected graph of >= 4 atoms
                raise ValueError(f"cannot build a Z-matrix row for {g.describe_atom(i)}")
            rows.append((i, j, k, l))
            half.append(bool(siblings) and j in stereocentres)
        return rows, half

    def _reference_signs(self, reference_positions):
        x = torch.as_tensor(np.asarray(reference_positions, dtype=np.float64).reshape(1, self.n_atoms, 3))
        signs = []
        for r in self.half_rows:
            i, j, k, l = self.zmatrix[r]
            phi = float(_dihedral(x[:, i], x[:, j], x[:, k], x[:, l])[0])
            if not 1e-3 < abs(phi) < math.pi - 1e-3:
                raise ValueError(
                    f"the reference structure is flat at stereocentre {self.graph.describe_atom(j)}: the dihedral "
                    f"{i}-{j}-{k}-{l} is {phi:.4g} rad, so its handedness is undefined"
                )
            signs.append(1 if phi > 0 else -1)
        return signs

    def to_dict(self):
        d = super().to_dict()
        if self.stereo is not None:
            d.update(stereo=self.stereo, stereocentres=list(self.stereocentres), signs=list(self.signs))
        if self.first_torsions:
            d["first_torsions"] = [list(t) for t in self.first_torsions]
        if self.atom_order is not None:
            d["order"] = self.atom_order
        if self.leading:
            d["leading"] = list(self.leading)
        if self.branches is not None:
            d["branches"] = self.branches
        return d

    def torsion_coordinate(self, dihedral):
        """Index of the model coordinate that is the dihedral ``(i, j, k, l)`` (rad, periodic), or
        ``None`` when no coordinate is exactly that dihedral (then train a model with it in
        ``first_torsions``). The dihedral read backwards, ``(l, k, j, i)``, is the same angle."""
        column = self._zmatrix_torsion_column(dihedral)
        return None if column is None else int(self._position[column])

    def to_model_coordinates(self, positions):
        a, b, c = self.anchors
        x = positions
        cols = [
            torch.linalg.norm(x[:, b] - x[:, a], dim=-1),
            torch.linalg.norm(x[:, c] - x[:, a], dim=-1),
            _angle(x[:, c], x[:, a], x[:, b]),
        ]
        if self.zmatrix:
            i, j, k, l = (list(col) for col in zip(*self.zmatrix))
            bonds = torch.linalg.norm(x[:, i] - x[:, j], dim=-1)
            angles = _angle(x[:, i], x[:, j], x[:, k])
            torsions = _dihedral(x[:, i], x[:, j], x[:, k], x[:, l])
            if self.half_rows:
                torsions = torsions * self._row_signs.to(torsions)
            per_atom = torch.stack([bonds, angles, torsions], dim=-1).reshape(len(x), -1)
            z = torch.cat([torch.stack(cols, dim=1), per_atom], dim=1)
        else:
            z = torch.stack(cols, dim=1)
        return self.model_order(z), self._zmatrix_log_volume(z)

    def from_model_coordinates(self, z):
        z = self.zmatrix_order(z)
        a, b, c = self.anchors
        n = z.shape[0]
        pos = [None] * self.n_atoms
        zero = z.new_zeros(n)
        pos[a] = z.new_zeros((n, 3))
        pos[b] = torch.stack([z[:, 0], zero, zero], dim=-1)
        pos[c] = torch.stack([z[:, 1] * torch.cos(z[:, 2]), z[:, 1] * torch.sin(z[:, 2]), zero], dim=-1)
        half = set(self.half_rows)
        for row, (i, j, k, l) in enumerate(self.zmatrix):
            r, theta, phi = z[:, 3 + 3 * row], z[:, 4 + 3 * row], z[:, 5 + 3 * row]
            if row in half:
                phi = phi * float(self._row_signs[row])
            pos[i] = _place_atom(pos[j], pos[k], pos[l], r, theta, phi)
        return torch.stack(pos, dim=1), self._zmatrix_log_volume(z)

    def in_support(self, positions):
        """Boolean (n,): True where every half torsion of the positions (n, N, 3) is in (0, pi),
        i.e. every stereocentre has the reference's handedness (always True without ``stereo``)."""
        z, _ = self.to_model_coordinates(torch.as_tensor(positions, dtype=torch.float64))
        h = z[:, self.half_torsion_columns]
        return ((h > 0) & (h < math.pi)).all(dim=1)

    def log_volume(self, z):
        """``log|J|`` (n,) of model coordinates (n, 3N-6), in the model's order."""
        return self._zmatrix_log_volume(self.zmatrix_order(z))

    @staticmethod
    def _zmatrix_log_volume(z):
        bonds = torch.cat([z[:, :2], z[:, 3::3]], dim=1)
        angles = torch.cat([z[:, 2:3], z[:, 4::3]], dim=1)
        return 2.0 * torch.log(bonds).sum(1) + torch.log(torch.sin(angles)).sum(1)


def build_representation(kind, graph, anchors=None, reference_positions=None, first_torsions=None, branches=None):
    """Make a representation by name, or rebuild a stored one.

    Parameters
    ----------
    kind : str, dict or representation
        ``"internal"`` or ``"cartesian"``; or a dict written by ``to_dict()`` (a checkpoint's
        ``representation``), rebuilt exactly: a dict without ``"stereo"`` gives the Z-matrix with
        every torsion periodic, as models trained before the relative-torsion scheme expect; or a
        representation object, returned as it is.
    graph : MolecularGraph or topology
    anchors : (int, int, int), optional
        Ignored for a dict that stores its anchors.
    reference_positions : array_like (N, 3) nm, optional
        With ``"internal"``: build the handedness of the reference's stereocentres into the
        coordinates (``stereo="relative-torsion"``); without it, every torsion is periodic.
        Ignored by ``"cartesian"``.
    first_torsions : sequence of (i, j, k, l), optional
        With ``"internal"``: dihedrals that become the first torsion coordinates
        (:class:`InternalRepresentation`); refused by ``"cartesian"``.
    branches : {None, "sibling"}
        With ``"internal"``: how later substituents of a branch atom get their torsions
        (:class:`InternalRepresentation`); ignored by ``"cartesian"``.
    """
    classes = {"cartesian": CartesianRepresentation, "internal": InternalRepresentation}
    if isinstance(kind, _Representation):
        return kind
    if isinstance(kind, dict):
        d = dict(kind)
        name = d.pop("kind", None)
        if name not in classes:
            raise ValueError(f"representation must be one of {sorted(classes)}; got {name!r}")
        anchors = d.pop("anchors", anchors)
        allowed = {"stereo", "stereocentres", "signs", "first_torsions", "order", "leading", "branches"} if name == "internal" else set()
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"unknown {name} representation settings {sorted(unknown)} (written by a newer openmm-arbg?)")
        if name == "internal":
            d.setdefault("leading", [])  # stored without it: the Z-matrix order (openmm-arbg 0.x models)
        return classes[name](graph, anchors, **d)
    if kind not in classes:
        raise ValueError(f"representation must be one of {sorted(classes)}; got {kind!r}")
    if kind == "internal":
        stereo = RELATIVE_TORSION if reference_positions is not None else None
        return InternalRepresentation(graph, anchors, stereo=stereo, reference_positions=reference_positions,
                                      first_torsions=first_torsions, branches=branches)
    if first_torsions:
        raise ValueError("first_torsions needs the internal representation: Cartesian coordinates have no torsions")
    return classes[kind](graph, anchors)


def plan_first_torsions(graph, torsions, anchors=None):
    """Anchors and the first atoms of the order that make chosen dihedrals model coordinates.

    Each dihedral ``(i, j, k, l)`` becomes the torsion of the Z-matrix row of whichever end atom is
    placed last, with the other three placed before it. Dihedrals are taken in order; atoms a
    dihedral needs and that are not yet placed are placed first (along the chain, or along the
    shortest bonded path from the atoms already placed), with ordinary rows.

    Parameters
    ----------
    graph : MolecularGraph
    torsions : sequence of (i, j, k, l)
        Bonded chains ``i-j-k-l`` of atom indices.
    anchors : (int, int, int), optional
        Default: the first dihedral's ``(j, k, i)``, which makes it coordinate 5.

    Returns
    -------
    anchors : (int, int, int)
    prefix : list of (atom, parent)
        Atoms to place right after the anchors (:meth:`MolecularGraph.traversal_order`).
    forced : dict
        ``atom -> (k, l)``: the angle and torsion atoms of each chosen dihedral's row.
    """
    quads = []
    for t in torsions:
        t = tuple(int(a) for a in t)
        if len(t) != 4 or len(set(t)) != 4 or not all(0 <= a < graph.n_atoms for a in t):
            raise ValueError(f"a dihedral is four distinct atom indices in [0, {graph.n_atoms}); got {t}")
        if any(t[m + 1] not in graph.neighbors[t[m]] for m in range(3)):
            names = "-".join(graph.describe_atom(a) for a in t)
            raise ValueError(f"dihedral {t} ({names}) is not a bonded chain i-j-k-l: only such dihedrals can be torsion coordinates")
        quads.append(t)
    if anchors is None:
        i, j, k, _ = quads[0]
        anchors = (j, k, i)
    order, prefix, forced = [int(a) for a in anchors], [], {}

    def place(atom, parent):
        prefix.append((atom, parent))
        order.append(atom)

    for t in quads:
        if t[0] in order:  # the end atom placed last is t[0]
            t = t[::-1]
        i, j, k, l = t
        if i in order:
            names = "-".join(graph.describe_atom(a) for a in t)
            raise ValueError(
                f"dihedral {t} ({names}) cannot be a model coordinate: both its end atoms are placed by the anchors or "
                "earlier dihedrals; list it earlier, or choose other anchors"
            )
        chain = [j, k, l]
        if not any(a in order for a in chain):  # reach the chain by the shortest bonded path, avoiding i
            came_from, queue = {a: None for a in order}, list(order)
            while queue and not any(a in came_from for a in chain):
                nxt = []
                for a in queue:
                    for b in graph.neighbors[a]:
                        if b not in came_from and b != i:
                            came_from[b] = a
                            nxt.append(b)
                queue = nxt
            target = next((a for a in chain if a in came_from), None)
            if target is None:
                raise ValueError(f"dihedral {t} is not connected to the anchors without passing through atom {i}")
            path = []
            while came_from[target] is not None:
                path.append((target, came_from[target]))
                target = came_from[target]
            for atom, parent in reversed(path):
                place(atom, parent)
        while any(a not in order for a in chain):
            for m, a in enumerate(chain):
                placed_nbrs = [chain[n] for n in (m - 1, m + 1) if 0 <= n < 3 and chain[n] in order]
                if a not in order and placed_nbrs:
                    place(a, placed_nbrs[0])
                    break
        place(i, j)
        forced[i] = (k, l)
    return tuple(order[:3]), prefix, forced
