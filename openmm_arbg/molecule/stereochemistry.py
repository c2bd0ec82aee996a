"""Stereochemistry: the handedness of tetrahedral centres, recorded from a reference and checked."""

import numpy as np

__all__ = ["StereoChecker"]


class StereoChecker:
    """Handedness of every tetrahedral centre (atom with four bonded neighbours).

    A classical force field gives mirror images the same energy, but MD of one stereoisomer never
    visits the other; the target is the Boltzmann distribution restricted to the reference's
    stereochemistry (``docs/design.md``). Each centre's sign is that of the triple product of its
    first three neighbours' bond vectors (neighbours in index order), recorded from a reference.

    Parameters
    ----------
    graph : MolecularGraph
    reference_signs : sequence of int, optional
        +1/-1 per centre; set with :meth:`record`.
    """

    def __init__(self, graph, reference_signs=None):
        self.graph = graph
        self.centers = [i for i in range(graph.n_atoms) if len(graph.neighbors[i]) == 4]
        self.reference_signs = None if reference_signs is None else np.asarray(reference_signs, dtype=int)

    def signs(self, positions):
        """Handedness (+1/-1) of each centre, shape (n, n_centers)."""
        x = np.asarray(positions, dtype=float)
        if not self.centers:
            return np.zeros((len(x), 0), dtype=int)
        c = np.array(self.centers)
        nb = np.array([self.graph.neighbors[i][:3] for i in self.centers])
        v = x[:, nb, :] - x[:, c, None, :]
        return np.where(np.linalg.det(v) > 0, 1, -1)

    def record(self, reference_positions):
        """Record the handedness of a reference configuration (N, 3) nm."""
        self.reference_signs = self.signs(np.asarray(reference_positions, dtype=float)[None])[0]
        return self

    def check(self, positions):
        """Boolean mask, shape (n,): True where every centre has the reference handedness."""
        if self.reference_signs is None:
            raise RuntimeError("no reference stereochemistry recorded; call record(reference_positions)")
        return (self.signs(positions) == self.reference_signs[None, :]).all(axis=1)
