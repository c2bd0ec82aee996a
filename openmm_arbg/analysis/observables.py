"""Observables of molecules: dihedral angles, backbone (phi, psi), and the alanine dipeptide basins
and regions (the package's one definition of them)."""

import numpy as np

from ..molecule.topology import _as_mdtraj, backbone_dihedral_indices, dihedral_indices, named_dihedrals  # noqa: F401 (re-exported)

__all__ = [
    "dihedrals",
    "dihedral_indices",
    "named_dihedrals",
    "backbone_dihedral_indices",
    "backbone_dihedrals",
    "alanine_dipeptide_basins",
    "dihedral_regions",
    "phi_sign_changes",
    "BASINS",
]

BASINS = ("beta", "alpha_R", "phi>0")


def dihedrals(positions, topology_or_indices):
    """Dihedral angles in rad, shape (n_frames, m), with mdtraj's and OpenMM's (IUPAC) sign.

    Parameters
    ----------
    positions : array_like (n, N, 3) or (N, 3), nm
    topology_or_indices : array_like of int (m, 4), or a topology (mdtraj, OpenMM or MolecularGraph)
        Atom quadruples; for a topology, its backbone phi dihedrals followed by its psi dihedrals
        (:func:`backbone_dihedral_indices`).
    """
    if isinstance(topology_or_indices, (list, tuple, np.ndarray)):
        idx = np.asarray(topology_or_indices, dtype=int).reshape(-1, 4)
    else:
        idx = np.concatenate(backbone_dihedral_indices(topology_or_indices))
    x = np.asarray(positions, dtype=np.float64)
    x = x.reshape((-1,) + x.shape[-2:])
    b1 = x[:, idx[:, 1]] - x[:, idx[:, 0]]
    b2 = x[:, idx[:, 2]] - x[:, idx[:, 1]]
    b3 = x[:, idx[:, 3]] - x[:, idx[:, 2]]
    c1 = np.cross(b2, b3)
    c2 = np.cross(b1, b2)
    p1 = (b1 * c1).sum(-1) * np.sqrt((b2 * b2).sum(-1))
    p2 = (c1 * c2).sum(-1)
    return np.arctan2(p1, p2)


def backbone_dihedrals(positions, topology):
    """Backbone (phi, psi) in degrees, arrays of shape (n_frames, n_phi) and (n_frames, n_psi).

    Parameters
    ----------
    positions : array_like (n, N, 3) nm
    topology : mdtraj.Topology, openmm.app.Topology or MolecularGraph
    """
    phi, psi = backbone_dihedral_indices(topology)
    angles = np.degrees(dihedrals(positions, np.concatenate([phi, psi])))
    return angles[:, : len(phi)], angles[:, len(phi) :]


def alanine_dipeptide_basins(phi_deg, psi_deg):
    """Basin index per frame: 0 beta/C7eq (phi < 0 and (psi > 50 or psi < -120)), 1 alpha_R
    (phi < 0 and -120 <= psi <= 50), 2 phi > 0 (alpha_L / C7ax). Angles in degrees."""
    phi = np.asarray(phi_deg).reshape(-1)
    psi = np.asarray(psi_deg).reshape(-1)
    basin = np.where(phi >= 0, 2, np.where((psi >= -120) & (psi <= 50), 1, 0))
    return basin


def dihedral_regions(names):
    """Regions of dihedral space worth reporting, as indicator functions of dihedral values.

    Parameters
    ----------
    names : list of str
        What each column of the values is (``"phi"``, ``"psi"`` or atom indices), as given to
        :func:`dihedral_indices`.

    Returns
    -------
    dict
        Region name -> callable mapping values (n, len(names)) in rad to a bool array (n,):
        ``"phi>0"`` when phi is among the names, and the alanine dipeptide basins
        (:data:`BASINS`) when phi and psi both are.
    """
    names = list(names)
    regions = {}
    if "phi" in names:
        j = names.index("phi")
        regions["phi>0"] = lambda v: np.asarray(v)[:, j] >= 0
        if "psi" in names:
            m = names.index("psi")
            for b, basin in enumerate(BASINS):
                regions[basin] = lambda v, b=b: alanine_dipeptide_basins(np.degrees(np.asarray(v)[:, j]), np.degrees(np.asarray(v)[:, m])) == b
    return regions


def phi_sign_changes(phi_deg):
    """Number of consecutive observations between which phi changes sign (crossings of phi = 0)."""
    s = np.sign(np.asarray(phi_deg).reshape(-1))
    return int(np.sum(s[1:] != s[:-1]))
