"""Stereocentres, labelling-free handedness, deterministic peptide builds, and handedness built
into the internal representation (half torsions in (0, pi))."""

import math

import numpy as np
import openmm
import openmm.unit as unit
import pytest
import torch

from openmm_arbg import ArBG
from openmm_arbg.model.discretizer import Discretizer
from openmm_arbg.molecule.features import FEATURE_SIZES, coordinate_features
from openmm_arbg.molecule.representation import (
    COORDINATE_KINDS,
    HALF_TORSION,
    InternalRepresentation,
    build_representation,
    place_in_frame,
)
from openmm_arbg.molecule.stereochemistry import StereoChecker, find_stereocentres
from openmm_arbg.molecule.topology import MolecularGraph

from conftest import TINY_NETWORK, jittered


def _names(graph, atoms):
    return [(graph.atoms[i]["resname"], graph.atoms[i]["name"]) for i in atoms]


def _legacy_signs(graph, x):
    """The signs openmm-arbg stored before stereocentres were detected: every four-connected
    atom, triple product of its first three neighbours in index order."""
    centres = [i for i in range(graph.n_atoms) if len(graph.neighbors[i]) == 4]
    return [1 if np.linalg.det(x[graph.neighbors[c][:3]] - x[c]) > 0 else -1 for c in centres]


def _md_frames(ms, n_frames=5, steps=100, seed=1):
    """A short Langevin run (1 fs, no constraints): frames (n_frames, N, 3) nm."""
    integrator = openmm.LangevinMiddleIntegrator(ms.temperature, 10.0 / unit.picosecond, 1.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(ms.system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPositions(ms.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    context.setVelocitiesToTemperature(ms.temperature, seed)
    frames = []
    for _ in range(n_frames):
        integrator.step(steps)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(frames, dtype=float)


@pytest.fixture(scope="module")
def aaa():
    from openmm_arbg.simulation.systems import capped_peptide

    return capped_peptide("AAA")


@pytest.fixture(scope="module")
def ti():
    from openmm_arbg.simulation.systems import capped_peptide

    return capped_peptide("TI")


@pytest.fixture(scope="module")
def aaa_independent(monkeypatch_module):
    """Ace-AAA-Nme built with another hydrogen stream and without canonical hydrogen labels:
    the same molecule (names, order), its methyl hydrogens labelled differently."""
    import openmm_arbg.simulation.peptides as peptides
    from openmm_arbg.simulation.systems import capped_peptide

    monkeypatch_module.setattr(peptides, "_HYDROGEN_SEED", 12345)
    monkeypatch_module.setattr(peptides, "canonicalise_equivalent_hydrogens", lambda top, pos: pos)
    ms = capped_peptide("AAA")
    monkeypatch_module.undo()
    return ms


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# ---------------------------------------------------------------------------- detection
def test_stereocentres_of_alanine_dipeptide(alanine):
    g = MolecularGraph.from_topology(alanine.topology)
    assert _names(g, find_stereocentres(g)) == [("ALA", "CA")]


def test_stereocentres_of_capped_peptides(aaa, ti):
    g = MolecularGraph.from_topology(aaa.topology)
    assert _names(g, find_stereocentres(g)) == [("ALA", "CA")] * 3
    g = MolecularGraph.from_topology(ti.topology)
    assert _names(g, find_stereocentres(g)) == [("THR", "CA"), ("THR", "CB"), ("ILE", "CA"), ("ILE", "CB")]


def test_no_stereocentres_in_toluene_or_glycine(toluene):
    from openmm_arbg.simulation.peptides import build_capped_peptide

    assert find_stereocentres(MolecularGraph.from_topology(toluene.topology)) == []
    top, _ = build_capped_peptide("G")
    g = MolecularGraph.from_topology(top)
    assert sum(len(nb) == 4 for nb in g.neighbors) == 3  # CH3 of Ace, CA of Gly, C of Nme
    assert find_stereocentres(g) == []


def test_ring_and_deep_branches():
    """Substituents that differ only far from the centre, and ring branches."""

    def graph(elements, bonds):
        atoms = [dict(name=f"{e}{i}", element=e, resname="MOL", resSeq=1, chain=0) for i, e in enumerate(elements)]
        return MolecularGraph(atoms, bonds)

    # C0(H)(H)-... no; C0 with branches -CH2-CH2-OH, -CH2-CH2-CH3, -H, -F: distinct only at depth 3
    el = ["C", "H", "F", "C", "C", "O", "H", "C", "C", "C"]
    bonds = [(0, 1), (0, 2), (0, 3), (3, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 9)]
    el += ["H"] * 13
    h = 10
    for heavy, n_h in [(3, 2), (4, 2), (7, 2), (8, 2), (9, 3)]:
        for _ in range(n_h):
            bonds.append((heavy, h))
            h += 1
    g = graph(el[:h], bonds)
    assert find_stereocentres(g) == [0]
    # the same with -CH2-CH2-CH3 on both sides: not a stereocentre
    el2 = list(el[:h])
    el2[5] = "C"
    bonds2 = [b for b in bonds if b != (5, 6)] + [(5, 6)]
    g2 = graph(el2 + ["H", "H"], bonds2 + [(5, h), (5, h + 1)])
    assert find_stereocentres(g2) == []
    # cyclohexane carbon with H and F: the two ring directions are equal, not a stereocentre
    ring = [(i, (i + 1) % 6) for i in range(6)]
    el3 = ["C"] * 6 + ["F"] + ["H"] * 11
    bonds3 = ring + [(0, 6), (0, 7)] + [(c, 8 + 2 * (c - 1) + k) for c in range(1, 6) for k in range(2)]
    assert find_stereocentres(graph(el3, bonds3)) == []
    # methylcyclohexane with F on C1 and a methyl on C2: C1 and C2 are stereocentres
    el4 = ["C"] * 6 + ["F", "H", "C", "H"] + ["H"] * 8 + ["H"] * 3
    bonds4 = ring + [(0, 6), (0, 7), (1, 8), (1, 9)]
    k = 10
    for c in range(2, 6):
        bonds4 += [(c, k), (c, k + 1)]
        k += 2
    bonds4 += [(8, k), (8, k + 1), (8, k + 2)]
    assert find_stereocentres(graph(el4, bonds4)) == [0, 1]


def test_detection_and_signs_do_not_depend_on_labelling(ti):
    """Renumber the atoms: the same atoms are stereocentres with the same signs."""
    g = MolecularGraph.from_topology(ti.topology)
    x = ti.positions_nm()
    perm = np.random.default_rng(0).permutation(g.n_atoms)  # new index p -> old index perm[p]
    inv = np.argsort(perm)
    g2 = MolecularGraph([g.atoms[i] for i in perm], [(inv[i], inv[j]) for i, j in g.bonds])
    centres = find_stereocentres(g)
    assert sorted(perm[find_stereocentres(g2)]) == centres
    s1 = dict(zip(centres, StereoChecker(g).signs(x)[0]))
    c2 = StereoChecker(g2)
    s2 = dict(zip(perm[c2.centers], c2.signs(x[perm])[0]))
    assert s1 == s2


# ---------------------------------------------------------------------------- the checker
def test_checker_ignores_methyl_labels_and_flags_mirror_images(aaa, aaa_independent):
    g = MolecularGraph.from_topology(aaa.topology)
    g_other = MolecularGraph.from_topology(aaa_independent.topology)
    assert g_other.fingerprint() == g.fingerprint()
    x, y = aaa.positions_nm(), aaa_independent.positions_nm()
    # the independent build labels some methyl hydrogens the other way round
    assert _legacy_signs(g, x) != _legacy_signs(g, y)
    checker = StereoChecker(g).record(x)
    frames = np.concatenate([y[None], jittered(y, 20, 0.01, seed=4), _md_frames(aaa_independent)])
    assert checker.check(frames).all()
    assert not checker.check(frames * np.array([1.0, 1.0, -1.0])).any()
    # inverting one centre: swap HA and CB through the first CA
    ca = checker.centers[0]
    ha, cb = [n for n in g.neighbors[ca] if g.atoms[n]["name"] in ("HA", "CB")]
    z = x.copy()
    r = np.linalg.norm(x[[ha, cb]] - x[ca], axis=1, keepdims=True)
    z[[ha, cb]] = x[ca] + (x[[cb, ha]] - x[ca]) / np.linalg.norm(x[[cb, ha]] - x[ca], axis=1, keepdims=True) * r
    assert not checker.check(z[None]).any()


def test_legacy_signs_are_converted_exactly(alanine, ti):
    for ms in (alanine, ti):
        g = MolecularGraph.from_topology(ms.topology)
        x = ms.positions_nm()
        recorded = StereoChecker(g).record(x)
        legacy = _legacy_signs(g, x)
        np.testing.assert_array_equal(StereoChecker(g, legacy).reference_signs, recorded.reference_signs)
        # a 0.1 checkpoint's plain list keeps every four-connected atom (methyls too), same signs on the real ones
        legacy_checker = StereoChecker.from_dict(g, legacy)
        assert set(recorded.centers) <= set(legacy_checker.centers)
        keep = [legacy_checker.centers.index(c) for c in recorded.centers]
        np.testing.assert_array_equal(legacy_checker.reference_signs[keep], recorded.reference_signs)
        assert legacy_checker.check(x[None]).all()
        again = StereoChecker.from_dict(g, recorded.to_dict())
        np.testing.assert_array_equal(again.reference_signs, recorded.reference_signs)
        assert again.centers == recorded.centers
    with pytest.raises(ValueError, match="one sign"):
        StereoChecker(g, [1] * (len(recorded.centers) + 1))


def test_shipped_model_keeps_its_target():
    """The 0.1 models were trained on one labelling of the methyl hydrogens and checked every
    four-connected atom; they keep that target (exact for observables invariant under permuting
    equivalent atoms), so their numbers stay the same."""
    model = ArBG.from_pretrained("alanine_dipeptide_vacuum")
    assert model.stereo.centers == [1, 8, 10, 18]
    assert "stereo" not in model.representation.to_dict()
    assert HALF_TORSION not in model.representation.coordinate_kinds


# ---------------------------------------------------------------------------- builds
def test_peptide_builds_are_deterministic():
    import random

    from openmm_arbg.simulation.peptides import build_capped_peptide

    random.seed(1)
    state = random.getstate()
    builds = [build_capped_peptide("AAA") for _ in range(2)]
    assert random.getstate() == state  # the global stream is left alone
    random.seed(99)
    builds.append(build_capped_peptide("AAA"))
    names = [[(a.residue.name, a.name) for a in top.atoms()] for top, _ in builds]
    x = [np.asarray(pos.value_in_unit(unit.nanometer)) for _, pos in builds]
    assert names[0] == names[1] == names[2]
    np.testing.assert_array_equal(x[0], x[1])
    np.testing.assert_array_equal(x[0], x[2])


def test_canonical_hydrogen_labels_keep_the_energy(aaa_independent):
    from openmm_arbg.simulation.peptides import canonicalise_equivalent_hydrogens

    ms = aaa_independent
    raw = ms.positions_nm()
    canon = np.asarray(canonicalise_equivalent_hydrogens(ms.topology, ms.positions).value_in_unit(unit.nanometer))
    assert not np.array_equal(raw, canon)
    g = MolecularGraph.from_topology(ms.topology)
    signs = [
        np.linalg.det(canon[g.neighbors[c][:3]] - canon[c])
        for c in range(g.n_atoms)
        if len(g.neighbors[c]) == 4 and sum(g.elements[n] == "H" for n in g.neighbors[c]) >= 2
    ]
    assert min(signs) > 0
    context = openmm.Context(ms.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies = []
    for x in (raw, canon):
        context.setPositions(x)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert abs(energies[0] - energies[1]) < 1e-8 * max(1.0, abs(energies[0]))


# ---------------------------------------------------------------------------- representation
def _stereo_rep(ms):
    return build_representation("internal", ms.topology, reference_positions=ms.positions_nm())


@pytest.mark.parametrize("molecule", ["alanine", "aaa", "ti"])
def test_half_torsion_rows(molecule, request):
    ms = request.getfixturevalue(molecule)
    rep = _stereo_rep(ms)
    g = rep.graph
    assert rep.stereocentres == find_stereocentres(g)
    # every stereocentre has all substituents after its first placed by a half torsion
    for c in rep.stereocentres:
        rows = [r for r, (i, j, k, l) in enumerate(rep.zmatrix) if j == c]
        half = [r for r in rows if r in rep.half_rows]
        assert len(half) >= 2 and len(rows) - len(half) <= 1
        for r in half:
            i, j, k, l = rep.zmatrix[r]
            assert l in g.neighbors[j] and l != k and rep.coordinate_kinds[5 + 3 * r] == HALF_TORSION
    assert rep.coordinate_kinds.count(HALF_TORSION) == len(rep.half_rows) == len(rep.signs)
    # stored and rebuilt exactly
    again = build_representation(rep.to_dict(), g)
    assert again.zmatrix == rep.zmatrix and again.signs == rep.signs and again.to_dict() == rep.to_dict()


def test_legacy_dict_rebuilds_todays_zmatrix(aaa):
    g = MolecularGraph.from_topology(aaa.topology)
    legacy = InternalRepresentation(g)
    rebuilt = build_representation({"kind": "internal", "anchors": list(legacy.anchors)}, g)
    assert rebuilt.zmatrix == legacy.zmatrix and rebuilt.stereo is None
    assert HALF_TORSION not in rebuilt.coordinate_kinds
    assert build_representation("internal", g).to_dict() == {"kind": "internal", "anchors": list(legacy.anchors)}
    with pytest.raises(ValueError, match="unknown"):
        build_representation({"kind": "internal", "anchors": list(legacy.anchors), "chirality": 1}, g)
    with pytest.raises(ValueError, match="reference"):
        InternalRepresentation(g, stereo="relative-torsion")


@pytest.mark.parametrize("molecule", ["aaa", "ti"])
def test_half_torsions_in_support_and_exact_bijection(molecule, request):
    ms = request.getfixturevalue(molecule)
    rep = _stereo_rep(ms)
    x0 = ms.positions_nm()
    frames = np.concatenate([x0[None], jittered(x0, 16, 0.01, seed=2), _md_frames(ms, n_frames=4)])
    x = torch.as_tensor(frames)
    z, lv = rep.to_model_coordinates(x)
    h = z[:, rep.half_torsion_columns]
    assert bool(((h > 0) & (h < math.pi)).all())
    assert bool(rep.in_support(x).all())
    # exact bijection on right-handed frames
    local, lv_back = rep.from_model_coordinates(z)
    origin, rotation = rep.frame(x)
    assert (place_in_frame(local, origin, rotation) - x).abs().max() < 1e-6
    assert torch.allclose(lv, lv_back)
    # mirror images are outside the support: every half torsion changes sign
    zm, _ = rep.to_model_coordinates(x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert bool((zm[:, rep.half_torsion_columns] < 0).all())
    assert not bool(rep.in_support(x * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)).any())


def test_stereo_log_volume_equals_jacobian_determinant(aaa):
    """The full Jacobian of (t, omega, z) -> x at t = 0, omega = 0 has log|det| = log_volume:
    the sign flip of the half torsions costs nothing."""
    from test_representation import _rotation

    rep = _stereo_rep(aaa)
    x = torch.as_tensor(jittered(aaa.positions_nm(), 1, 0.01, seed=3))
    z, lv = rep.to_model_coordinates(x)

    def full_map(params):
        t, omega, zz = params[:3], params[3:6], params[6:]
        local, _ = rep.from_model_coordinates(zz[None])
        return (local[0] @ _rotation(omega).T + t).reshape(-1)

    J = torch.autograd.functional.jacobian(full_map, torch.cat([torch.zeros(6, dtype=torch.float64), z[0]]))
    sign, logdet = torch.linalg.slogdet(J)
    assert sign != 0
    assert abs(logdet.item() - lv.item()) < 1e-8


def test_half_torsion_features():
    assert COORDINATE_KINDS[:4] == ["unbounded", "positive", "angle", "periodic"]  # ids of trained networks
    assert COORDINATE_KINDS[-1] == HALF_TORSION and FEATURE_SIZES[1] == 3 * len(COORDINATE_KINDS) == 15


def test_features_of_stereo_representation(aaa):
    rep = _stereo_rep(aaa)
    f = coordinate_features(rep.graph, rep)
    half = torch.tensor(rep.half_torsion_columns)
    assert bool((f[half, 1] == 3 * COORDINATE_KINDS.index(HALF_TORSION) + 2).all())
    assert int(f[:, 1].max()) < FEATURE_SIZES[1]


# ---------------------------------------------------------------------------- discretizer
def test_half_torsion_bins_are_normalised_on_zero_pi():
    lo, hi = 1.7, 2.4
    d = Discretizer([HALF_TORSION], [lo], [hi], 8, [0.3])
    assert bool(d.token_mask[0, 0]) and bool(d.token_mask[0, -1])  # both tails, truncated
    grid = torch.linspace(0, math.pi, 400001, dtype=torch.float64)[1:-1, None]
    tokens, logp = d.tokenize(grid)
    dz = float(grid[1, 0] - grid[0, 0])
    for t in (0, 1, 8, 9):
        inside = tokens[:, 0] == t
        assert abs(float(logp[inside, 0].exp().sum()) * dz - 1.0) < 1e-3
    out = torch.tensor([[-0.1], [0.0], [math.pi], [3.2]], dtype=torch.float64)
    assert bool(torch.isinf(d.tokenize(out)[1]).all())
    u = torch.rand(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in (0, 9):
        z, lp = d.dequantize(torch.full((1000,), t), u, 0)
        assert bool(((z > 0) & (z < math.pi)).all()) and bool(torch.isfinite(lp).all())
    assert not bool(d.periodic[0])


def test_fit_refuses_wrong_handed_frames():
    z = np.array([[2.0], [2.1], [-2.0]])
    with pytest.raises(ValueError, match="opposite handedness"):
        Discretizer.fit(z, [HALF_TORSION], 16)
    d = Discretizer.fit(z[:2], [HALF_TORSION], 16, margin=100.0)
    assert float(d.lo[0]) == 0.0 and abs(float(d.hi[0]) - math.pi) < 1e-12


# ---------------------------------------------------------------------------- the model
def _untrained_model(ms):
    """An untrained model: from_data builds the reference's handedness into the coordinates."""
    x = jittered(ms.positions_nm(), 64, 0.005, seed=1)
    model = ArBG.from_data(ms.topology, x, network=TINY_NETWORK, seed=0)
    assert model.representation.to_dict()["stereo"] == "relative-torsion"
    return model


@pytest.mark.parametrize("molecule", ["aaa", "ti"])
def test_untrained_model_draws_only_right_handed_shapes(molecule, request):
    ms = request.getfixturevalue(molecule)
    model = _untrained_model(ms)
    assert HALF_TORSION in model.representation.coordinate_kinds
    x, log_q = model.sample(500, seed=5)
    assert int((~model.check_stereo(x)).sum()) == 0
    np.testing.assert_allclose(model.log_prob(x), log_q, atol=1e-5)
    mirror = x * np.array([1.0, 1.0, -1.0])
    assert np.isneginf(model.log_prob(mirror)).all()


def test_equivalent_atoms_are_permuted_without_changing_the_energy(alanine):
    """The hydrogens of the three methyl groups of alanine dipeptide are the interchangeable
    atoms; relabelling them leaves every energy as it is and every real stereocentre as it is."""
    import openmm
    import openmm.unit as unit

    from openmm_arbg.molecule.stereochemistry import StereoChecker, equivalent_atom_groups, permute_equivalent_atoms
    from openmm_arbg.molecule.topology import MolecularGraph

    graph = MolecularGraph.from_topology(alanine.topology)
    groups = equivalent_atom_groups(graph)
    assert [len(atoms) for _, atoms in groups] == [3, 3, 3]
    assert all(graph.elements[c] == "C" and all(graph.elements[a] == "H" for a in atoms) for c, atoms in groups)
    x = np.repeat(alanine.positions_nm()[None], 20, axis=0)
    y = permute_equivalent_atoms(x, groups, rng=1)
    assert np.abs(y - x).max() > 0.05  # some hydrogens did move to another's place
    ctx = openmm.Context(alanine.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies = []
    for frame in (x[0], *y):
        ctx.setPositions(frame * unit.nanometer)
        energies.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert np.ptp(energies) < 1e-6
    checker = StereoChecker(graph).record(x[0])
    assert checker.check(y).all()

