"""Observables of peptides: backbone dihedrals and the alanine dipeptide basins."""

import numpy as np

__all__ = ["backbone_dihedrals", "alanine_dipeptide_basins", "phi_sign_changes", "BASINS"]

BASINS = ("beta", "alpha_R", "phi>0")


def backbone_dihedrals(positions, topology):
    """Backbone (phi, psi) in degrees, arrays of shape (n_frames, n_residues_with_both).

    Parameters
    ----------
    positions : array_like (n, N, 3) nm
    topology : mdtraj.Topology or openmm.app.Topology
    """
    import mdtraj

    if not isinstance(topology, mdtraj.Topology):
        topology = mdtraj.Topology.from_openmm(topology)
    traj = mdtraj.Trajectory(np.asarray(positions, dtype=np.float32).reshape(-1, topology.n_atoms, 3), topology)
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    return np.degrees(phi), np.degrees(psi)


def alanine_dipeptide_basins(phi_deg, psi_deg):
    """Basin index per frame: 0 beta/C7eq (phi < 0 and (psi > 50 or psi < -120)), 1 alpha_R
    (phi < 0 and -120 <= psi <= 50), 2 phi > 0 (alpha_L / C7ax). Angles in degrees."""
    phi = np.asarray(phi_deg).reshape(-1)
    psi = np.asarray(psi_deg).reshape(-1)
    basin = np.where(phi >= 0, 2, np.where((psi >= -120) & (psi <= 50), 1, 0))
    return basin


def phi_sign_changes(phi_deg):
    """Number of consecutive observations between which phi changes sign (crossings of phi = 0)."""
    s = np.sign(np.asarray(phi_deg).reshape(-1))
    return int(np.sum(s[1:] != s[:-1]))
