"""The library functions the CLI calls: dihedrals, the chain runner, warnings, the bootstrap
loops, the system of a model, and `arbg evaluate` end to end."""

import math

import mdtraj
import numpy as np
import pytest

from openmm_arbg import ArBG
from openmm_arbg.analysis.diagnostics import warning_lines
from openmm_arbg.analysis.free_energy import basin_free_energy_from_weights
from openmm_arbg.analysis.observables import backbone_dihedrals, dihedral_indices, dihedral_regions, dihedrals
from openmm_arbg.cli import main
from openmm_arbg.cli.common import system_for_model
from openmm_arbg.sampling.chain import ChainResult, run_chain
from openmm_arbg.sampling.importance import normalized_weights, weighted_mean
from openmm_arbg.simulation.testsystems import harmonic_chain

from conftest import TINY_NETWORK, jittered


def test_dihedrals_match_mdtraj(alanine):
    x = jittered(alanine.positions_nm(), 20, scale=0.03, seed=1)
    traj = mdtraj.Trajectory(x.astype(np.float32), mdtraj.Topology.from_openmm(alanine.topology))
    phi_idx, phi = mdtraj.compute_phi(traj)
    psi_idx, psi = mdtraj.compute_psi(traj)
    assert np.allclose(dihedrals(x, np.concatenate([phi_idx, psi_idx])), np.concatenate([phi, psi], 1), atol=1e-5)
    assert np.allclose(dihedrals(x, alanine.topology), np.concatenate([phi, psi], 1), atol=1e-5)
    phi_deg, psi_deg = backbone_dihedrals(x, alanine.topology)
    assert np.allclose(np.radians(phi_deg), phi, atol=1e-5) and np.allclose(np.radians(psi_deg), psi, atol=1e-5)
    assert dihedrals(x[0], [[0, 1, 2, 3]]).shape == (1, 1)  # one frame (N, 3) is allowed
    assert dihedral_indices(alanine.topology, ["phi", "psi", "0,1,2,3"]).tolist() == [list(phi_idx[0]), list(psi_idx[0]), [0, 1, 2, 3]]
    with pytest.raises(ValueError, match="four atom indices"):
        dihedral_indices(alanine.topology, ["1,2,3"])
    assert set(dihedral_regions(["phi", "psi"])) == {"phi>0", "beta", "alpha_R"} and set(dihedral_regions(["psi"])) == set()


def _old_weighted_mean(values, log_w, n_bootstrap, rng):  # the loop weighted_mean had before utils.bootstrap
    v, log_w = np.asarray(values, float), np.asarray(log_w, float)
    mean = np.tensordot(normalized_weights(log_w), v, axes=(0, 0))
    rng, boots, n = np.random.default_rng(rng), [], len(log_w)
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        if np.isfinite(log_w[idx]).any():
            boots.append(np.tensordot(normalized_weights(log_w[idx]), v[idx], axes=(0, 0)))
    return mean, np.std(boots, axis=0, ddof=1)


def test_bootstraps_draw_as_before():
    rng = np.random.default_rng(0)
    log_w = rng.normal(size=40)
    log_w[rng.random(40) < 0.8] = -np.inf  # many zero weights: some resamples have none valid
    values = rng.normal(size=(40, 3))
    for got, want in zip(weighted_mean(values, log_w, 100, rng=3), _old_weighted_mean(values, log_w, 100, 3)):
        assert np.array_equal(got, want)
    a = rng.random(40) < 0.5
    est, err = basin_free_energy_from_weights(np.zeros(40), a, ~a, n_bootstrap=300, rng=4)
    p = (~a).mean()
    assert est == pytest.approx(-math.log(p / (1 - p))) and 0 < err < 1


def test_warning_lines():
    assert warning_lines(dict(ess_fraction=0.5, pareto_k=0.3, acceptance_rate=0.2, wrong_handed_fraction=0.0)) == []
    lines = warning_lines(dict(ess_fraction=0.005, pareto_k=0.9, acceptance_rate=0.001, wrong_handed_fraction=0.05))
    assert len(lines) == 4
    assert "ESS/N is 0.50 %" in lines[0] and "Pareto k" in lines[1] and "acceptance is 0.10 %" in lines[2] and "5.0 %" in lines[3]
    chain = ChainResult(None, statistics=dict(n_accepted=0, n_proposed=200, n_wrong_stereo=10, n_failed_energy=0))
    assert len(warning_lines(chain)) == 2


@pytest.fixture(scope="module")
def chain_model(tmp_path_factory):
    ms, _ = harmonic_chain(4)
    model = ArBG.from_data(ms.topology, jittered(ms.positions_nm(), 500, scale=0.02), n_bins=16, network=TINY_NETWORK, seed=0)
    path = tmp_path_factory.mktemp("model") / "chain.safetensors"
    model.save(path)
    return ms, ArBG.load(path)


def test_run_chain_records_observables_and_counts(chain_model):
    from openmmtools.states import ThermodynamicState
    import openmm.unit as unit

    ms, model = chain_model
    state = ThermodynamicState(ms.system, 300 * unit.kelvin)
    torsion = {"torsion": lambda x: dihedrals(x, [[0, 1, 2, 3]])[:, 0]}
    kwargs = dict(n_attempts=3, observables=torsion, block_size=7, seed=11)
    a = run_chain(model, state, ms.positions, 30, **kwargs)  # ArBG moves only: reproducible from the seed
    b = run_chain(model.checkpoint_path, state, ms.positions_nm(), 30, keep_positions=False, **kwargs)
    assert a.positions.shape == (30, ms.n_atoms, 3) and b.positions is None
    assert np.allclose(a.observables["torsion"], b.observables["torsion"])  # same seed, same chain
    assert np.allclose(a.observables["torsion"], dihedrals(a.positions, [[0, 1, 2, 3]])[:, 0])
    assert a.statistics == b.statistics and a.statistics["n_proposed"] == 90 and a.n_energy_evaluations == 90
    c = run_chain(model, state, ms.positions, 30, langevin_steps=5, **kwargs)
    assert c.n_energy_evaluations == 30 * 8 and c.n_iterations == 30 and len(c.observables["torsion"]) == 30
    assert 0 <= c.acceptance_rate <= 1 and "30 iterations, 240 energy evaluations" in c.summary()
    with pytest.raises(ValueError, match="n_iterations"):
        run_chain(model, state, ms.positions, 0)


def test_system_of_a_model(chain_model, capsys):
    from openmm_arbg.pretrained import pretrained_path

    ala = ArBG.load(pretrained_path("alanine_dipeptide_vacuum"))
    assert system_for_model(ala).name == "alanine_dipeptide_vacuum"
    assert "also: alanine_dipeptide_implicit" in capsys.readouterr().out
    assert system_for_model(ala, "alanine_dipeptide_implicit").name == "alanine_dipeptide_implicit"
    with pytest.raises(ValueError, match="give the target with --system"):
        system_for_model(chain_model[1])
    with pytest.raises(ValueError, match="does not match"):
        system_for_model(ala, "peptide:AA")


def test_evaluate_command(tmp_path, alanine, capsys):
    import openmm.app as app

    from openmm_arbg.pretrained import pretrained_path
    from openmm_arbg.simulation.md import run_md

    traj = run_md(alanine, str(tmp_path / "md"), n_steps=3000, report_interval=20, equilibration_steps=500, progress=False)
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--reference", str(tmp_path / "md" / "trajectory.dcd"),
            "--topology", str(tmp_path / "md" / "topology.pdb"), "--n", "300", "--lag", "5", "--max-points", "200", "--workers", "1",
            "--output", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for row in ("ESS/N", "Pareto k", "E-W2 (kT)", "T-W2 (rad)", "TICA-W2", "reference halves against each other",
                f"| reference frames | {traj.n_frames} | {traj.n_frames // 2} per half |"):
        assert row in text
    floor_cells = [line.split("|")[3].strip() for line in text.splitlines() if line.startswith(("| E-W2", "| T-W2", "| TICA-W2"))]
    assert len(floor_cells) == 3 and all(float(c) > 0 for c in floor_cells)  # the halves' own metrics
    assert (out / "evaluation.md").read_text() in text
    assert (out / "ramachandran.png").stat().st_size > 1000 and (out / "energies.png").stat().st_size > 1000

    # the same frames as two runs (--reference A B): the same proposals, E-W2, T-W2 and halves; TICA
    # takes each run as its own time series
    def rows(table):
        return {line.split("|")[1].strip(): line.split("|")[2:4] for line in table.splitlines() if line.startswith("| ")}

    half = traj.n_frames // 2
    traj[:half].save_dcd(str(tmp_path / "a.dcd"))
    traj[half:].save_dcd(str(tmp_path / "b.dcd"))
    two = [*argv[:3], "--reference", str(tmp_path / "a.dcd"), str(tmp_path / "b.dcd"), *argv[5:-1], str(tmp_path / "eval2")]
    assert main(two) == 0
    one_run, two_runs = rows((out / "evaluation.md").read_text()), rows((tmp_path / "eval2" / "evaluation.md").read_text())
    for row in ("ESS/N", "E-W2 (kT)", "T-W2 (rad)", "reference frames"):
        assert one_run[row] == two_runs[row], (row, one_run[row], two_runs[row])
    assert float(two_runs["TICA-W2"][0].split()[0]) >= 0
    capsys.readouterr()
    assert main([*two[:-1], str(tmp_path / "eval3"), "--lag", str(half)]) == 2  # no run longer than the lag
    assert f"runs' longest ({half} frames) must be longer than the TICA lag" in capsys.readouterr().err
    pdb = tmp_path / "other.pdb"
    from openmm_arbg.simulation.systems import capped_peptide

    other = capped_peptide("AA")
    with open(pdb, "w") as f:
        app.PDBFile.writeFile(other.topology, other.positions, f)
    assert main([*argv[:5], "--topology", str(pdb)]) == 2  # the reference is another molecule


def test_evaluate_saved_proposals(tmp_path, alanine, capsys):
    """arbg evaluate --proposals: the proposals of arbg sample --output, evaluated without drawing
    again (the same ESS as the sampling run reported); another model's, a resampled file and --n
    beside it are refused with what to do."""
    from openmm_arbg.pretrained import pretrained_path
    from openmm_arbg.simulation.md import run_md

    run_md(alanine, str(tmp_path / "md"), n_steps=3000, report_interval=20, equilibration_steps=500, progress=False)
    model = pretrained_path("alanine_dipeptide_vacuum")
    samples = str(tmp_path / "s.dcd")
    assert main(["sample", "--model", model, "--n", "300", "--seed", "3", "--workers", "1", "--output", samples, "--quiet"]) == 0
    capsys.readouterr()
    argv = ["evaluate", "--model", model, "--reference", str(tmp_path / "md" / "trajectory.dcd"), "--lag", "5",
            "--max-points", "200", "--workers", "1", "--proposals", samples, "--output", str(tmp_path / "e")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    saved = np.load(samples + ".progress/result.npz")
    w = np.exp(saved["log_weights"] - saved["log_weights"].max())
    ess = w.sum() ** 2 / (w ** 2).sum()
    assert f"| proposals (energy evaluations) | 300 |" in text and f"| ESS/N | {100 * ess / 300:.2f} % |" in text, text
    assert main([*argv, "--n", "100"]) == 2 and "leave out --n" in capsys.readouterr().err
    other = [*argv[:2], pretrained_path("alanine_dipeptide_vacuum_self_trained"), *argv[3:]]
    assert main(other) == 2 and "another model" in capsys.readouterr().err
    resampled = str(tmp_path / "r.dcd")
    assert main(["sample", "--model", model, "--n", "50", "--seed", "3", "--workers", "1", "--resample", "--output", resampled,
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main([*argv[:-3], resampled, "--output", str(tmp_path / "e2")]) == 2
    assert "resampled population" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line():
    """``python -m openmm_arbg.cli`` is the ``arbg`` command (for environments without its script)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "openmm_arbg.cli", "md", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: arbg md" in done.stdout, done.stderr
