"""User-defined states: expressions over named backbone dihedrals and distances, populations and
free energies from chains and from importance weights."""

import numpy as np
import pytest

from openmm_arbg.analysis.free_energy import alanine_dipeptide_analysis
from openmm_arbg.analysis.observables import backbone_dihedrals
from openmm_arbg.analysis.states import StateExpression, state_populations

ALANINE_STATES = {
    "beta": "phi2 < 0 and (psi2 > 50 or psi2 < -120)",
    "alpha_R": "phi2 < 0 and -120 <= psi2 <= 50",
    "phi>0": "phi >= 0",
}


def _frames(alanine, n=400, seed=0):
    """Alanine dipeptide frames with psi and phi spread out (rigid rotations of the C-terminal part)."""
    from conftest import jittered

    return jittered(alanine.positions_nm(), n, 0.02, seed=seed)


def test_expressions_match_the_built_in_alanine_basins(alanine):
    x = _frames(alanine)
    phi, psi = backbone_dihedrals(x, alanine.topology)
    from openmm_arbg.analysis.observables import alanine_dipeptide_basins

    basin = alanine_dipeptide_basins(phi, psi)
    for k, (name, expr) in enumerate(ALANINE_STATES.items()):
        assert np.array_equal(StateExpression(expr, alanine.topology)(x), basin == k), name
    # chain and weighted estimates equal the built-in analysis
    chain = state_populations(ALANINE_STATES, x, alanine.topology)
    ref = alanine_dipeptide_analysis(x, alanine.topology)["populations"]
    for name in ALANINE_STATES:
        assert chain[name]["population"] == pytest.approx(ref[name][0])
    log_w = np.random.default_rng(1).normal(size=len(x))
    weighted = state_populations(ALANINE_STATES, x, alanine.topology, log_weights=log_w, rng=3)
    ref_w = alanine_dipeptide_analysis(x, alanine.topology, log_w, rng=3)["populations"]
    for name in ALANINE_STATES:
        assert weighted[name]["population"] == pytest.approx(ref_w[name][0])
        assert np.isfinite(weighted[name]["population_error"])


def test_distances_callables_and_arithmetic(alanine):
    x = _frames(alanine, 50)
    d = np.linalg.norm(x[:, 4] - x[:, 14], axis=-1)
    cut = float(np.median(d))
    expr = StateExpression(f"d(4, 14) < {cut} and not abs(phi2 + 0) > 400", alanine.topology)
    assert np.array_equal(expr(x), d < cut)
    res = state_populations({"near": lambda p: np.linalg.norm(p[:, 4] - p[:, 14], axis=-1) < cut}, x, alanine.topology)
    assert res["near"]["population"] == pytest.approx(np.mean(d < cut))
    assert res["near"]["free_energy"] == pytest.approx(-np.log(np.mean(d < cut)))


@pytest.mark.parametrize(
    "expr, words",
    [
        ("phi9 < 0", "unknown name 'phi9'"),
        ("__import__('os')", "may be called"),
        ("phi2 < ", "not a valid expression"),
        ("d(0, 999) < 1", "atom indices"),
        ("[phi2]", "is not allowed"),
        ("phi2.real > 0", "is not allowed"),
    ],
)
def test_bad_expressions_say_what_is_wrong(alanine, expr, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        StateExpression(expr, alanine.topology)


def test_peptide_names_per_residue():
    from openmm_arbg.simulation.systems import capped_peptide

    ms = capped_peptide("AAA")
    expr = StateExpression("phi2 < 0 and phi3 < 0 and phi4 < 0 and psi3 > -180", ms.topology)
    assert sorted(expr.dihedral_names) == ["phi2", "phi3", "phi4", "psi2", "psi3", "psi4"]
    assert expr(ms.positions_nm()[None]).shape == (1,)


@pytest.mark.parametrize("sequence, residue", [("V", 2), ("TPG", 2), ("FKS", 3)])
def test_side_chain_chi1_names_match_mdtraj(sequence, residue):
    """chiN_K in the state language and in dihedral_indices (umbrella, profile) is mdtraj's chiN of
    residue K: the trans-rotamer state agrees with mdtraj.compute_chi1 frame by frame."""
    import mdtraj

    from openmm_arbg.molecule.topology import dihedral_indices
    from openmm_arbg.simulation.md import basin_starts
    from openmm_arbg.simulation.systems import capped_peptide

    ms = capped_peptide(sequence)
    frames, _ = basin_starts(ms.positions_nm(), ms.topology, 9, seed=1)  # chi1 in p, t and m three times each
    top = mdtraj.Topology.from_openmm(ms.topology)
    quads, chi = mdtraj.compute_chi1(mdtraj.Trajectory(frames, top))
    k = [top.atom(int(q[1])).residue.index + 1 for q in quads].index(residue)
    assert dihedral_indices(ms.topology, [f"chi1_{residue}"]).tolist() == [quads[k].tolist()]
    trans = StateExpression(f"abs(chi1_{residue}) > 120", ms.topology)(frames)
    assert np.array_equal(trans, np.abs(np.degrees(chi[:, k])) > 120) and trans.sum() == 3
    with pytest.raises(ValueError, match="no dihedral 'chi1_9'"):
        dihedral_indices(ms.topology, ["chi1_9"])
    with pytest.raises(ValueError, match="unknown name 'chi1_1'"):
        StateExpression("chi1_1 > 0", ms.topology)  # Ace has no side chain


def test_free_energy_errors_where_the_delta_method_fails(alanine):
    """A state never visited: F = inf, error NaN. A state whose population error reaches its
    population (one heavy weight on it): the error of -ln P is inf, not dP/P."""
    x = _frames(alanine, 40)
    log_w = np.zeros(len(x))
    log_w[0] = 8.0  # one frame holds nearly all the weight
    states = {"first": lambda p: np.arange(len(p)) == 0, "rest": lambda p: np.arange(len(p)) > 0,
              "none": lambda p: np.zeros(len(p), bool)}
    res = state_populations(states, x, alanine.topology, log_weights=log_w, rng=0)
    assert res["none"]["free_energy"] == np.inf and np.isnan(res["none"]["free_energy_error"])
    assert res["rest"]["population_error"] >= res["rest"]["population"] > 0
    assert res["rest"]["free_energy_error"] == np.inf and np.isfinite(res["rest"]["free_energy"])
    assert np.isfinite(res["first"]["free_energy_error"])


def test_state_ess_counts_the_weights_inside_each_state_and_flags_thin_ones(alanine):
    from openmm_arbg.analysis.state_discovery import STATE_ESS_WARNING, describe_results
    from openmm_arbg.sampling.importance import effective_sample_size

    x = _frames(alanine)
    masks = {name: StateExpression(expr, alanine.topology)(x) for name, expr in ALANINE_STATES.items()}
    log_w = np.random.default_rng(2).normal(size=len(x))
    big = max(masks, key=lambda n: masks[n].sum())
    log_w[np.flatnonzero(masks[big])[:1]] += 8.0  # one proposal carries most of the weight inside the largest state
    res = state_populations(ALANINE_STATES, x, alanine.topology, log_weights=log_w, rng=0)
    for name, mask in masks.items():
        assert res[name]["state_ess"] == pytest.approx(effective_sample_size(log_w[mask]) if mask.any() else 0.0)
    assert res[big]["state_ess"] < 2 < STATE_ESS_WARNING
    lines = describe_results({"rare": dict(res[big], ess=500.0, population=0.02), "common": dict(res[big], ess=500.0, state_ess=900.0)})
    assert any("inside rare (" in line and "few dozen" in line for line in lines)
    assert not any("inside common" in line for line in lines)
