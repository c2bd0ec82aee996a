"""Exact bijections between positions and model coordinates, and their Jacobians."""

import numpy as np
import pytest
import torch

from openmm_arbg.molecule.representation import (
    CartesianRepresentation,
    InternalRepresentation,
    build_representation,
    place_in_frame,
)
from openmm_arbg.molecule.stereochemistry import StereoChecker
from openmm_arbg.molecule.topology import MolecularGraph

from conftest import jittered


def _build(kind, ms):
    """``internal-stereo``: the internal representation with the reference's handedness built in."""
    if kind == "internal-stereo":
        return build_representation("internal", ms.topology, reference_positions=ms.positions_nm())
    return build_representation(kind, ms.topology)


def _rotation(omega):
    """exp([omega]_x): rotation with Haar density 1 at omega = 0."""
    K = torch.zeros(3, 3, dtype=omega.dtype)
    K[0, 1], K[0, 2], K[1, 2] = -omega[2], omega[1], -omega[0]
    K = K - K.T
    return torch.linalg.matrix_exp(K)


@pytest.mark.parametrize("kind", ["cartesian", "internal", "internal-stereo"])
@pytest.mark.parametrize("molecule", ["alanine", "toluene"])
def test_round_trip(kind, molecule, request):
    ms = request.getfixturevalue(molecule)
    rep = _build(kind, ms)
    x = torch.as_tensor(jittered(ms.positions_nm(), 8, 0.01))
    # random rigid motion: the model coordinates must not change
    R = _rotation(torch.tensor([0.3, -1.1, 2.0], dtype=torch.float64))
    x_moved = x @ R.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    z, lv = rep.to_model_coordinates(x)
    z2, _ = rep.to_model_coordinates(x_moved)
    assert z.shape == (8, 3 * ms.n_atoms - 6)
    assert torch.allclose(z, z2, atol=1e-9)
    local, lv_back = rep.from_model_coordinates(z)
    origin, rotation = rep.frame(x_moved)
    back = place_in_frame(local, origin, rotation)
    assert (back - x_moved).abs().max() < 1e-5  # nm
    assert torch.allclose(lv, lv_back)


@pytest.mark.parametrize("kind", ["cartesian", "internal", "internal-stereo"])
def test_log_volume_equals_jacobian_determinant(kind, alanine):
    """d^{3N}x = d^3t dR exp(log_volume) dz: the full Jacobian of (t, omega, z) -> x at t = 0,
    omega = 0 (Haar density 1 there) has log|det| equal to log_volume."""
    rep = _build(kind, alanine)
    x = torch.as_tensor(jittered(alanine.positions_nm(), 1, 0.01, seed=3))
    z, lv = rep.to_model_coordinates(x)

    def full_map(params):
        t, omega, zz = params[:3], params[3:6], params[6:]
        local, _ = rep.from_model_coordinates(zz[None])
        return (local[0] @ _rotation(omega).T + t).reshape(-1)

    params = torch.cat([torch.zeros(6, dtype=torch.float64), z[0]])
    J = torch.autograd.functional.jacobian(full_map, params)
    sign, logdet = torch.linalg.slogdet(J)
    assert sign != 0
    assert abs(logdet.item() - lv.item()) < 1e-8


def test_internal_and_cartesian_volumes_are_consistent(toluene):
    """The internal -> Cartesian-frame map has log|det J| = log_volume_int - log_volume_cart."""
    internal = InternalRepresentation(toluene.topology)
    cart = CartesianRepresentation(toluene.topology, anchors=internal.anchors)
    x = torch.as_tensor(jittered(toluene.positions_nm(), 1, 0.01, seed=1))
    z_int, lv_int = internal.to_model_coordinates(x)
    z_cart, lv_cart = cart.to_model_coordinates(x)

    def f(zz):
        return cart.to_model_coordinates(internal.from_model_coordinates(zz[None])[0])[0][0]

    J = torch.autograd.functional.jacobian(f, z_int[0])
    assert abs(torch.linalg.slogdet(J)[1].item() - (lv_int - lv_cart).item()) < 1e-8


def test_anchor_override_and_errors(alanine):
    g = MolecularGraph.from_topology(alanine.topology)
    a, b, c = g.default_anchors()
    assert b in g.neighbors[a] and c in g.neighbors[a]
    rep = CartesianRepresentation(g, anchors=(4, 1, 5))  # C, CH3, O of the acetyl cap
    assert rep.anchors == (4, 1, 5)
    with pytest.raises(ValueError, match="bonded"):
        CartesianRepresentation(g, anchors=(0, 8, 9))
    with pytest.raises(ValueError, match="distinct"):
        InternalRepresentation(g, anchors=(4, 4, 5))
    with pytest.raises(ValueError, match="representation must be"):
        build_representation("zmatrix", g)


def test_internal_coordinate_kinds(alanine):
    rep = InternalRepresentation(alanine.topology)
    kinds = rep.coordinate_kinds
    assert kinds[:3] == ["positive", "positive", "angle"]
    assert kinds[3:6] == ["positive", "angle", "periodic"]
    assert len(kinds) == 60 and kinds.count("periodic") == 19
    # with the handedness built in, the CA's C and HA are placed by half torsions relative to CB
    stereo = build_representation("internal", alanine.topology, reference_positions=alanine.positions_nm())
    assert stereo.coordinate_kinds.count("half_torsion") == 2 and stereo.coordinate_kinds.count("periodic") == 17
    assert [stereo.zmatrix[r][1] for r in stereo.half_rows] == [8, 8]


def test_mirror_image_is_flagged(alanine):
    x = alanine.positions_nm()
    checker = StereoChecker(MolecularGraph.from_topology(alanine.topology)).record(x)
    assert checker.centers == [8]  # only CA: the methyl carbons are not stereocentres
    mirror = x * np.array([1.0, 1.0, -1.0])
    assert checker.check(x[None]).all()
    assert not checker.check(mirror[None]).any()
    # inverting one centre only: swap the CA hydrogen (HA, index 9) and CB (index 10) through CA
    ca = 8
    assert ca in checker.centers
    swapped = x.copy()
    swapped[[9, 10]] = x[8] + (x[[10, 9]] - x[8]) * np.linalg.norm(x[[9, 10]] - x[8], axis=1, keepdims=True) / np.linalg.norm(
        x[[10, 9]] - x[8], axis=1, keepdims=True
    )
    assert not checker.check(swapped[None]).any()
