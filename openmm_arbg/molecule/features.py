"""Categorical features that tell the network what each model coordinate is.

Feature 0 is the element of the atom the coordinate places; feature 1 combines the coordinate's
kind (its support: unbounded, positive, angle, periodic, half torsion) and role (x/y/z axis, or
bond/angle/torsion) as ``kind_index * 3 + role``. The vocabularies are fixed, so one network reads
every molecule; new kinds are appended to ``COORDINATE_KINDS``, so the ids of the older kinds, and
the networks trained on them, stay valid (a network whose vocabulary predates a kind cannot read
coordinates of that kind).
"""

import torch

from .representation import COORDINATE_KINDS

__all__ = ["ELEMENTS", "FEATURE_SIZES", "coordinate_features"]

ELEMENTS = ["H", "C", "N", "O", "S", "P", "F", "Cl", "Br", "I"]  # anything else: index len(ELEMENTS)
FEATURE_SIZES = [len(ELEMENTS) + 1, 3 * len(COORDINATE_KINDS)]


def coordinate_features(graph, representation):
    """Features of each model coordinate, ``torch.LongTensor`` of shape (D, 2)."""
    elements = [graph.elements[i] for i in representation.coordinate_atoms]
    element_ids = [ELEMENTS.index(e) if e in ELEMENTS else len(ELEMENTS) for e in elements]
    roles = [
        COORDINATE_KINDS.index(k) * 3 + r for k, r in zip(representation.coordinate_kinds, representation.coordinate_roles)
    ]
    return torch.tensor([element_ids, roles], dtype=torch.long).T
