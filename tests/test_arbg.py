"""ArBG: exact log q of its own samples, safe checkpoints, clear errors on bad input."""

import os

import mdtraj
import numpy as np
import pytest
import torch

from openmm_arbg import ArBG
from openmm_arbg.utils import file_sha256

from conftest import TINY_NETWORK, jittered


@pytest.fixture(scope="module")
def frames(alanine):
    return jittered(alanine.positions_nm(), 200, 0.005)


@pytest.fixture(scope="module", params=["internal", "cartesian"])
def model(request, alanine, frames):
    return ArBG.from_data(alanine.topology, frames, representation=request.param, n_bins=64, network=TINY_NETWORK, seed=1)


@pytest.mark.parametrize("temperature", [1.0, 1.5])
def test_log_prob_of_samples_equals_reported_log_q(model, temperature):
    x, log_q = model.sample(64, proposal_temperature=temperature, seed=3)
    assert x.shape == (64, 22, 3) and log_q.shape == (64,)
    assert np.isfinite(log_q).all()
    # KV-cache sampling path vs one full forward pass
    assert np.abs(model.log_prob(x, proposal_temperature=temperature) - log_q).max() < 1e-4
    # the density is of shapes: a rigid motion of the samples does not change it
    moved = x @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T + 0.7
    assert np.abs(model.log_prob(moved, proposal_temperature=temperature) - log_q).max() < 1e-4


def test_seeded_sampling_is_reproducible(model):
    a, la = model.sample(5, seed=11)
    b, lb = model.sample(5, seed=11)
    assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_place_keeps_frame(model, frames):
    x, _ = model.sample(4, seed=0)
    placed = model.place(x, frames[0])
    np.testing.assert_allclose(model.log_prob(placed), model.log_prob(x), atol=1e-6)
    a = model.representation.anchors[0]
    np.testing.assert_allclose(placed[:, a], np.repeat(frames[:1, a], 4, 0), atol=1e-9)


def test_accepts_quantity_trajectory_and_single_frame(model, alanine, frames):
    q = alanine.positions
    lp_q = model.log_prob(q)
    lp_a = model.log_prob(alanine.positions_nm())
    np.testing.assert_allclose(lp_q, lp_a)
    traj = mdtraj.Trajectory(frames[:3].astype(np.float32), mdtraj.Topology.from_openmm(alanine.topology))
    assert model.log_prob(traj).shape == (3,)


def test_save_load_round_trip(model, alanine, tmp_path):
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = ArBG.load(path, topology=alanine.topology)
    x, log_q = model.sample(16, seed=2)
    np.testing.assert_allclose(loaded.log_prob(x), log_q, atol=1e-9)
    assert loaded.representation.kind == model.representation.kind
    assert loaded.representation.anchors == model.representation.anchors
    assert len(file_sha256(path)) == 64
    np.testing.assert_array_equal(loaded.stereo.reference_signs, model.stereo.reference_signs)


def test_bad_positions_raise_clear_errors(model, alanine, frames):
    with pytest.raises(ValueError, match="have 21 atoms but the model has 22"):
        model.log_prob(frames[:, :21])
    bad = frames[:3].copy()
    bad[1, 4, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 of 3 frames"):
        model.log_prob(bad)
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(np.zeros((5, 22)))
    # a trajectory whose atoms are in another order
    from openmm_arbg.molecule.topology import MolecularGraph

    g = MolecularGraph.from_topology(alanine.topology)
    order = np.r_[1, 0, 2:22]
    new_index = np.argsort(order)
    permuted = MolecularGraph([g.atoms[i] for i in order], [(new_index[i], new_index[j]) for i, j in g.bonds])
    shuffled = mdtraj.Trajectory(frames[:2, order].astype(np.float32), permuted.to_mdtraj())
    with pytest.raises(ValueError, match="does not match the model's molecule: atom 0 is ACE:CH3"):
        model.log_prob(shuffled)


def test_wrong_molecule_and_corrupt_files(model, toluene, tmp_path, alanine):
    path = tmp_path / "m.safetensors"
    model.save(path)
    with pytest.raises(ValueError, match="trained on another molecule"):
        ArBG.load(path, topology=toluene.topology)
    # truncated file
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable openmm-arbg checkpoint"):
        ArBG.load(tmp_path / "cut.safetensors")
    # foreign files: random bytes, a pickle, a safetensors file of something else
    (tmp_path / "noise.bin").write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match="not a readable openmm-arbg checkpoint"):
        ArBG.load(tmp_path / "noise.bin")
    torch.save({"a": torch.zeros(3)}, tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match="not a readable openmm-arbg checkpoint"):
        ArBG.load(tmp_path / "pickle.pt")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an openmm-arbg checkpoint"):
        ArBG.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        ArBG.load(tmp_path / "missing.safetensors")


def test_other_molecule(toluene):
    """Nothing is specific to peptides: a ring molecule works in both representations."""
    frames = jittered(toluene.positions_nm(), 50, 0.004)
    for rep in ("internal", "cartesian"):
        m = ArBG.from_data(toluene.topology, frames, representation=rep, n_bins=32, network=TINY_NETWORK)
        x, log_q = m.sample(16, seed=0)
        assert np.abs(m.log_prob(x) - log_q).max() < 1e-4


def test_stereo_check_of_mirror(model, frames):
    assert model.check_stereo(frames[:5]).all()
    assert not model.check_stereo(frames[:5] * np.array([-1.0, 1.0, 1.0])).any()


def test_sampling_without_kv_cache_gives_the_same_draws(model):
    import torch

    g1 = torch.Generator().manual_seed(4)
    g2 = torch.Generator().manual_seed(4)
    z1, l1 = model.density.sample(16, generator=g1, kv_cache=True)
    z2, l2 = model.density.sample(16, generator=g2, kv_cache=False)
    assert torch.allclose(z1, z2, atol=1e-6) and torch.allclose(l1, l2, atol=1e-4)


def test_in_support_is_where_log_prob_is_finite(model, frames):
    rng = np.random.default_rng(5)
    mirrored = frames[:30] * np.array([-1.0, 1.0, 1.0])  # the other handedness (internal) / the other side of x_b = 0
    distorted = frames[:30] + rng.normal(0.0, 0.06, frames[:30].shape)  # coordinates in the tails, some past a bound
    x = np.concatenate([frames[:30], mirrored, distorted])
    finite = np.isfinite(model.log_prob(x))
    assert finite[:30].all()
    if getattr(model.representation, "half_torsion_columns", None):  # the internal coordinates carry the handedness: mirrors are outside
        assert not finite[30:60].any()
    np.testing.assert_array_equal(model.in_support(x), finite)
    np.testing.assert_array_equal(model.in_support(x, batch_size=7), finite)
