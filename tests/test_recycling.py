"""Waste recycling: every whole-molecule proposal of an ArBGMove chain, accepted or not, weighed as
importance sampling. Exact against the analytic chain; kept across chunks and resumes; from the
command line on alanine dipeptide."""

import numpy as np
import openmm.unit as unit

from conftest import chain_geometry, exact_chain_states


def _estimate_z(result, values, exact):
    mean, err = result.expectation(values, n_bootstrap=300, rng=0)
    return (mean - exact) / err


def test_recycled_proposals_are_exact_importance_samples(chain4_trained):
    """A chain of ArBGMove attempts from one exact state: the recycled proposals' weighted means of
    a bond length, cos(angle) and cos(3 phi) match the analytic values within 4 bootstrap standard
    errors; every attempt is recycled (whole moves), partial attempts are not."""
    from openmmtools.states import SamplerState, ThermodynamicState

    from openmm_arbg import ArBGMove

    ms, analytic, paths = chain4_trained
    start = exact_chain_states(analytic, 1, seed=5)[0]
    np.random.seed(3)
    move = ArBGMove(str(paths["internal"]), n_attempts=50, recycle=True)
    state, sampler_state = ThermodynamicState(ms.system, 300 * unit.kelvin), SamplerState(start * unit.nanometer)
    for _ in range(40):
        move.apply(state, sampler_state)
    recycled = move.pop_recycled()
    assert len(recycled["log_q"]) == move.n_proposed == 2000 and len(move.pop_recycled()["log_q"]) == 0
    result = ArBGMove.recycled_result(recycled)
    r, theta, phi = chain_geometry(ms.topology, result.positions)
    z = [
        _estimate_z(result, r[:, 0], analytic.expectation("bond", lambda v: v)),
        _estimate_z(result, np.cos(theta[:, 0]), analytic.expectation("angle", np.cos)),
        _estimate_z(result, np.cos(3 * phi[:, 0]), analytic.expectation("torsion", lambda p: np.cos(3 * p))),
    ]
    assert np.all(np.abs(z) < 4), z
    assert result.ess > 200  # the test has power: the trained model is a good proposal

    partial = ArBGMove(str(paths["internal"]), n_attempts=20, recycle=True, cuts=[0, 3], cut_probabilities=[0.5, 0.5])
    for _ in range(5):
        partial.apply(state, sampler_state)
    kept = len(partial.pop_recycled()["log_q"])
    assert 0 < kept < partial.n_proposed  # only the whole-molecule attempts (cut 0)


def test_run_chain_keeps_recycled_proposals_across_chunks(chain4_trained, tmp_path):
    """run_chain(recycle=True) in chunks to a file: the recycled arrays of an interrupted and resumed
    chain (simulated by stopping after a chunk) equal an uninterrupted chain's, and a completed
    chain gives them back."""
    from openmmtools.states import ThermodynamicState

    from openmm_arbg.sampling.chain import run_chain

    ms, analytic, paths = chain4_trained
    start = exact_chain_states(analytic, 1, seed=6)[0]
    state = ThermodynamicState(ms.system, 300 * unit.kelvin)
    kw = dict(n_attempts=5, langevin_steps=5, seed=4, chunk_iterations=4, topology=ms.topology, recycle=True, platform="Reference")
    full = run_chain(str(paths["internal"]), state, start, 12, output=str(tmp_path / "a.dcd"), **kw)
    assert len(full.recycled["log_q"]) == 12 * 5 and full.recycled_result.n == 60
    again = run_chain(str(paths["internal"]), state, start, 12, output=str(tmp_path / "a.dcd"), **kw)  # complete: read back
    for k, v in full.recycled.items():
        assert np.array_equal(again.recycled[k], v), k
    in_memory = run_chain(str(paths["internal"]), state, start, 12, **kw)
    assert np.allclose(in_memory.recycled["reduced_potentials"], full.recycled["reduced_potentials"])


def test_mcmc_recycle_and_free_energy_recycled_commands(tmp_path, capsys):
    import openmm.app as app

    from openmm_arbg.cli import main
    from openmm_arbg.pretrained import pretrained_path
    from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum

    out = tmp_path / "chain.dcd"
    assert main(["mcmc", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--iterations", "10", "--attempts", "20",
                 "--langevin-steps", "10", "--recycle", "--output", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "recycled whole-molecule proposals" in text and "200 proposals: ESS" in text
    pdb = tmp_path / "ala.pdb"
    ms = alanine_dipeptide_vacuum()
    with open(pdb, "w") as f:
        app.PDBFile.writeFile(ms.topology, ms.positions, f)
    npz = str(out) + ".progress/result.npz"
    assert main(["free-energy", "--recycled", npz, "--topology", str(pdb)]) == 0
    text = capsys.readouterr().out
    assert "200 recycled proposals" in text and "P(beta)" in text
    assert main(["free-energy", "--recycled", npz]) == 2  # no topology
    assert main(["free-energy", "--recycled", npz, "--trajectory", str(out), "--topology", str(pdb)]) == 2  # two sources
