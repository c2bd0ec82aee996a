"""Sibling-relative torsions of branch substituents (InternalRepresentation(branches="sibling")).

With the Z-matrix of openmm-arbg 0.2, every later substituent of a branch atom repeats the rotation
about the branch bond (Leu's HB2 and HB3 are placed against N, so they move with chi1). With
``branches="sibling"`` they are placed against their earliest placed sibling, so turning a side
chain about one bond changes exactly one model coordinate. The bijection stays exact.
"""

import math

import numpy as np
import pytest
import torch

from conftest import atom_index, n_coordinates_changed, turn_about_bond
from openmm_arbg.arbg import ArBG, ModelConfig
from openmm_arbg.molecule.representation import SIBLING, InternalRepresentation, build_representation
from openmm_arbg.molecule.topology import MolecularGraph


@pytest.fixture(scope="module", params=["L", "V", "KT"])
def peptide(request):
    from openmm_arbg.simulation.systems import build_system

    return build_system(f"peptide:{request.param}")


def _representations(ms):
    ref = ms.positions_nm()
    new = build_representation("internal", ms.topology, reference_positions=ref, branches=SIBLING)
    old = build_representation("internal", ms.topology, reference_positions=ref)
    return new, old


def test_turning_chi1_changes_one_coordinate(peptide):
    """A side chain turned about CA-CB: one sibling-relative coordinate moves, the old Z-matrix moves several."""
    new, old = _representations(peptide)
    g = new.graph
    resname = next(a["resname"] for a in g.atoms if a["resname"] not in ("ACE", "NME"))
    ca, cb = atom_index(g, resname, "CA"), atom_index(g, resname, "CB")
    x = peptide.positions_nm()
    y = turn_about_bond(x, g, ca, cb, math.radians(120.0))
    moved = {}
    for name, rep in (("sibling", new), ("parent", old)):
        z = rep.to_model_coordinates(torch.as_tensor(np.stack([x, y])))[0].numpy()
        moved[name] = n_coordinates_changed(z[0], z[1])
    assert moved["sibling"] == 1, moved
    assert moved["parent"] >= 3, moved  # chi1 and both CB hydrogens at least


def test_sibling_rows_and_exact_bijection(peptide):
    new, old = _representations(peptide)
    g = new.graph
    assert new.zmatrix != old.zmatrix and new.half_rows == old.half_rows and new.signs == old.signs
    seen = set()
    for i, j, k, l in new.zmatrix:
        if j in seen and j not in new.stereocentres:  # a later substituent of j: measured from a sibling
            assert l in g.neighbors[j] and l != k
        seen.add(j)
    rng = np.random.default_rng(0)
    x = peptide.positions_nm()[None] + 0.01 * rng.normal(size=(8, g.n_atoms, 3))
    z, log_volume = new.to_model_coordinates(torch.as_tensor(x))
    y, log_volume_back = new.from_model_coordinates(z)
    z_back, _ = new.to_model_coordinates(y)
    assert torch.allclose(z_back, z, atol=1e-10)
    assert torch.allclose(log_volume_back, log_volume, atol=1e-10)
    # the pairwise distances are those of the input: the same shape
    dx = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)
    dy = np.linalg.norm(y.numpy()[:, :, None] - y.numpy()[:, None], axis=-1)
    assert np.abs(dx - dy).max() < 1e-10


def test_stored_setting_round_trips_and_old_models_keep_their_zmatrix(peptide):
    new, old = _representations(peptide)
    again = build_representation(new.to_dict(), new.graph)
    assert again.zmatrix == new.zmatrix and again.to_dict() == new.to_dict() and new.to_dict()["branches"] == SIBLING
    assert "branches" not in old.to_dict()  # a stored model from before the setting: its own Z-matrix
    assert build_representation(old.to_dict(), old.graph).zmatrix == old.zmatrix
    with pytest.raises(ValueError, match="branches"):
        InternalRepresentation(MolecularGraph.from_topology(peptide.topology), branches="cousin")


def test_new_models_default_to_sibling_torsions(alanine):
    x = alanine.positions_nm()[None].repeat(3, 0)
    assert ArBG.from_data(alanine.topology, x).representation.branches == SIBLING
    assert ArBG.from_data(alanine.topology, x, branch_torsions="parent").representation.branches is None
    with pytest.raises(ValueError, match="branch_torsions"):
        ModelConfig(branch_torsions="cousin")
