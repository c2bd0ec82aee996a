"""Peptides from sequence, and the arbg command line end to end as a new user runs it."""

import numpy as np
import openmm.unit as unit
import pytest

from openmm_arbg.cli import main
from openmm_arbg.simulation.peptides import build_capped_peptide, check_peptide_geometry
from openmm_arbg.physics import check_shape_move_compatible
from openmm_arbg.simulation.systems import build_system, capped_peptide
from openmm_arbg.molecule.topology import MolecularGraph


def test_capped_alanine_matches_alanine_dipeptide(alanine):
    built = capped_peptide("A", implicit_solvent=False)
    a, b = MolecularGraph.from_topology(built.topology), MolecularGraph.from_topology(alanine.topology)
    assert sorted(a.elements) == sorted(b.elements) and len(a.bonds) == len(b.bonds)
    assert [r.name for r in built.topology.residues()] == ["ACE", "ALA", "NME"]
    assert built.system.getNumConstraints() == 0
    check_shape_move_compatible(built.system)


@pytest.mark.parametrize("sequence", ["AAA", "GYDPETGTWG", "WHCKR"])
def test_sequences_build_all_l_all_trans(sequence):
    top, pos = build_capped_peptide(sequence)
    assert top.getNumResidues() == len(sequence) + 2
    check_peptide_geometry(top, pos)  # raises for D residues or cis bonds


def test_mirror_image_peptide_is_refused():
    top, pos = build_capped_peptide("AV")
    mirrored = np.asarray(pos.value_in_unit(unit.nanometer)) * np.array([1.0, 1.0, -1.0])
    with pytest.raises(ValueError, match="D-amino acid"):
        check_peptide_geometry(top, mirrored)


def test_bad_sequences_and_system_names():
    with pytest.raises(ValueError, match="unknown: BX"):
        build_capped_peptide("ABX")
    with pytest.raises(ValueError, match="peptide:SEQUENCE"):
        build_system("chignolin")


def test_command_line_md_train_sample(tmp_path, capsys):
    md = tmp_path / "md"
    assert main(["md", "--system", "peptide:AA", "--ns", "0.01", "--report-ps", "0.1", "--equilibration-ps", "1", "--output", str(md), "--quiet"]) == 0
    traj = md / "310K" / "trajectory.dcd"
    top = md / "310K" / "topology.pdb"
    config = tmp_path / "train.yaml"
    config.write_text("n_steps: 10\nbatch_size: 32\nn_layer: 1\nd_model: 32\nn_head: 2\neval_interval: 5\nquiet: true\n")
    args = ["train", "--config", str(config), "--trajectories", str(traj), "--topology", str(top), "--output", str(tmp_path / "model"), "--threads", "1"]
    assert main(args) == 0
    assert main(args) == 0  # run again: resumes from the finished checkpoint, nothing breaks
    from openmm_arbg import ArBG

    model_path = str(tmp_path / "model" / "model.safetensors")
    trained = ArBG.load(model_path)
    assert trained.network.cfg.n_layer == 1 and trained.network.cfg.d_model == 32  # the YAML's settings
    assert trained.metadata["command"].startswith("arbg train --config")
    capsys.readouterr()
    weighted = ["train", "--config", str(config), "--trajectories", str(traj), str(traj), "--trajectory-weights", "1", "2",
                "--topology", str(top), "--output", str(tmp_path / "weighted"), "--threads", "1"]
    assert main(weighted) == 0
    assert "x2 (" in capsys.readouterr().out and (tmp_path / "weighted" / "model.safetensors").exists()
    # without --system the target is the built-in system of the model's molecule (here peptide:AA)
    assert main(["sample", "--model", model_path, "--n", "50", "--output", str(tmp_path / "s.dcd")]) == 0
    out = capsys.readouterr().out
    assert "using ace-aa-nme" in out and "50 proposals: ESS" in out and (tmp_path / "s.dcd").exists()
    assert "trained on MD of" not in out and "note:" not in out  # the MD's own System and temperature
    # arbg train recorded which System and temperature the MD simulated; a model trained on another System's MD
    # (a user's force field, another temperature) says so when --system is left out, --quiet or not
    from openmm_arbg.physics import system_fingerprint
    from openmm_arbg.simulation.systems import build_system

    (recorded,) = trained.metadata["md"]
    assert recorded["temperature_K"] == 310 and recorded["system_sha256"] == system_fingerprint(build_system("peptide:AA").system)
    trained.metadata["md"] = [dict(recorded, system="system", system_sha256="0" * 64, temperature_K=300.0)]
    trained.save(tmp_path / "other_md.safetensors")
    assert main(["sample", "--model", str(tmp_path / "other_md.safetensors"), "--n", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "warning: the model was trained on MD of system at 300 K, another System than ace-aa-nme" in out, out
    assert "note: the model's MD ran at 300 K, the target is at 310 K" in out and "target: ace-aa-nme" in out, out
    assert main(["sample", "--model", model_path, "--no-weights", "--n", "5"]) == 0
    assert "5 samples" in capsys.readouterr().out
    # a newcomer's mistakes get one-line errors and exit code 2
    assert main(["train", "--trajectories", str(traj), "--topology", str(tmp_path / "missing.pdb")]) == 2
    assert main(["sample", "--model", model_path, "--system", "alanine_dipeptide_vacuum"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "does not match" in err
    assert main(["train", "--config", str(config)]) == 2  # no trajectories
    assert "missing --trajectories" in capsys.readouterr().err
    assert main(["train", "--layers", "2", "--trajectories", str(traj), "--topology", str(top)]) == 2
    assert "--layers is now --n-layer" in capsys.readouterr().err


def test_command_line_mcmc_with_the_shipped_model(tmp_path, capsys, monkeypatch):
    from openmm_arbg.pretrained import pretrained_path

    out = tmp_path / "chain.dcd"
    args = ["mcmc", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--iterations", "20", "--attempts", "5", "--langevin-steps", "10", "--output", str(out), "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "using alanine_dipeptide_vacuum" in text and "ArBGMove acceptance" in text and out.exists()
    assert "F(alpha_R)" not in text  # the general chain command knows nothing of alanine's basins
    from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum
    import openmm.app as app

    pdb = tmp_path / "ala.pdb"
    ms = alanine_dipeptide_vacuum()
    with open(pdb, "w") as f:
        app.PDBFile.writeFile(ms.topology, ms.positions, f)
    assert main(["free-energy", "--trajectory", str(out), "--topology", str(pdb)]) == 0
    text = capsys.readouterr().out
    assert "F(phi>0) - F(beta)" in text and "F(alpha_R) - F(beta)" in text and "P(beta)" in text
    # several trajectories are independent runs, pooled (here the same run twice: the same populations)
    assert main(["free-energy", "--trajectory", str(out), str(out), "--topology", str(pdb), "--state", "beta=phi < 0 and psi > 100"]) == 0
    twice = capsys.readouterr().out
    assert "40 frames of 2 runs (20, 20 frames)" in twice
    assert main(["free-energy", "--trajectory", str(out), "--topology", str(pdb), "--state", "beta=phi < 0 and psi > 100"]) == 0
    once = capsys.readouterr().out
    assert once.split("P(beta) = ")[1].split(" +-")[0] == twice.split("P(beta) = ")[1].split(" +-")[0]
    # user states: a state the 20 frames never visit is reported as such, not with a meaningless error
    assert main(["free-energy", "--trajectory", str(out), "--topology", str(pdb), "--state", "all=phi < 200",
                 "--state", "none=phi > 200"]) == 0
    text = capsys.readouterr().out
    assert "P(all) = 100.00" in text and "P(none) = 0.00" in text and "never visited" in text
    assert main(["free-energy"]) == 2
    # a state the molecule cannot have is refused before any proposal is drawn or energy computed
    import openmm_arbg.sampling.importance as importance

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before checking the states")

    monkeypatch.setattr(importance, "importance_sample", no_sampling)
    assert main(["free-energy", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--n", "10", "--state", "x=phi9 < 0"]) == 2
    assert "phi9" in capsys.readouterr().err
    assert main(["mcmc", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--system", "peptide:AA", "--iterations", "1"]) == 2


def test_command_line_mcmc_with_partial_moves(tmp_path, capsys):
    """arbg mcmc --cuts: partial resampling from the command line; the cuts are part of the
    settings a resumed chain must match; bad cuts are refused with a message."""
    from openmm_arbg.pretrained import pretrained_path

    out = tmp_path / "partial.dcd"
    args = ["mcmc", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--iterations", "6", "--attempts", "4", "--langevin-steps", "0",
            "--cuts", "0", "30", "--cut-probabilities", "0.5", "0.5", "--output", str(out), "--quiet"]
    assert main(args) == 0 and out.exists()
    assert "ArBGMove acceptance" in capsys.readouterr().out
    assert main(args[:-4] + ["--cuts", "0", "20", "--output", str(out), "--quiet"]) == 2  # other cuts: refused, not mixed
    assert "cuts" in capsys.readouterr().err
    assert main(args[:11] + ["--cuts", "0", "60", "--output", str(tmp_path / "x.dcd")]) == 2
    assert "cuts must be model-coordinate indices in [0, 60)" in capsys.readouterr().err
    assert main(args[:11] + ["--cuts", "0", "--cut-probabilities", "0.5", "0.5"]) == 2


def test_command_line_mcmc_with_openmmtools_storage(tmp_path, capsys):
    """arbg mcmc --storage: openmmtools' MultiStateSampler and netCDF storage; the same command
    with more iterations resumes from the file and extends it."""
    from openmmtools import multistate

    from openmm_arbg.pretrained import pretrained_path

    nc = tmp_path / "chain.nc"
    args = ["mcmc", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--attempts", "3", "--langevin-steps", "5",
            "--chunk-iterations", "2", "--storage", str(nc), "--quiet"]
    assert main(args + ["--iterations", "4"]) == 0
    assert "4 iterations in" in capsys.readouterr().out
    assert main(args + ["--iterations", "6"]) == 0
    text = capsys.readouterr().out
    assert "6 iterations in" in text and "of 18)" in text  # the move's counters were restored: 6 x 3 attempts
    reporter = multistate.MultiStateReporter(str(nc), open_mode="r")
    assert reporter.read_last_iteration() == 6
    reporter.close()
    assert main(args[:-2] + ["--storage", str(tmp_path / "x.txt"), "--iterations", "2"]) == 2
