"""The transferable ArBG: canonical residue order, shared bins, exact zero-shot densities on
sequences it never saw, its trainer (held-out sequences, resume) and the command line."""

import numpy as np
import pytest
import torch

from conftest import atom_index, jittered, n_coordinates_changed, turn_about_bond
from openmm_arbg.molecule.features import bin_keys
from openmm_arbg.molecule.topology import MolecularGraph
from openmm_arbg.simulation.peptides import build_capped_peptide
from openmm_arbg.transferable import TransferableArBG, molecule_representation

NETWORK = dict(n_layer=1, n_head=2, d_model=32)


def built(sequence):
    top, pos = build_capped_peptide(sequence)[:2]
    return top, np.asarray(pos.value_in_unit(pos.unit))


@pytest.fixture(scope="module")
def peptides():
    """Jittered built structures (stand-ins for MD frames) of a few capped peptides."""
    return {s: (built(s)[0], jittered(built(s)[1], 64, scale=0.004, seed=i)) for i, s in enumerate(["A", "S", "V", "T", "AS"])}


@pytest.fixture(scope="module")
def model(peptides):
    return TransferableArBG.create([peptides[s] for s in "ASV"], NETWORK, n_bins=32, seed=3)


def _rows_by_name(sequence, residue):
    """Z-matrix rows (as atom names) of every atom of one residue, in model order."""
    top, x = built(sequence)
    graph = MolecularGraph.from_topology(top)
    rep = molecule_representation(graph, x)
    name = lambda i: graph.atoms[i]["name"]  # noqa: E731
    return [tuple(name(a) for a in row) for row in rep.zmatrix if graph.atoms[row[0]]["resname"] == residue]


def test_residue_order_is_the_same_for_a_residue_in_any_peptide():
    # alanine first, last or between other residues: its atoms in the same order, each placed from
    # the same atom; the same whole rows (atom names) wherever the residue before it is the same
    rows = [_rows_by_name(s, "ALA") for s in ("A", "AS", "SA", "VAS", "SAV")]
    assert all([r[:2] for r in rows_] == [r[:2] for r in rows[0]] for rows_ in rows[1:])
    assert rows[2] == rows[3] == rows[4] and rows[0] == rows[1]
    assert rows[0][0][:2] == ("N", "C")  # a residue starts with its backbone N, from the previous carbonyl C


def test_zero_shot_density_is_exact_on_a_held_out_sequence(model):
    # threonine is not a training sequence; its coordinates' chemistry (C-O-H, branched CB) is known
    arbg = model.for_sequence("T")
    x, log_q = arbg.sample(64, seed=0)
    np.testing.assert_allclose(arbg.log_prob(x), log_q, atol=1e-5)
    assert arbg.check_stereo(x).all()  # handedness by construction: no wrong-handed proposal
    z = torch.as_tensor(arbg.to_model_coordinates(x)[0])
    k = 17
    np.testing.assert_allclose(arbg.density.log_prob(z, stop=k) + arbg.density.log_prob(z, start=k),
                               arbg.density.log_prob(z), atol=1e-9)
    # the bins are the shared ones, looked up by each coordinate's chemistry
    keys = bin_keys(arbg.graph, arbg.representation)
    j = keys.index(next(k for k in keys if k.startswith("bond:")))
    assert float(arbg.discretizer.lo[j]) == model.bins[keys[j]][0]


def test_molecule_with_unseen_chemistry_is_refused_by_name(model):
    with pytest.raises(ValueError, match=r"never seen coordinates of .*S2.*train or fine-tune"):
        model.for_sequence("C")  # cysteine's sulfur: no training peptide had one


def test_save_load_and_single_molecule_file(model, tmp_path):
    from openmm_arbg import ArBG

    path = model.save(tmp_path / "t.safetensors")
    again = TransferableArBG.load(path)
    assert again.sequences == ["A", "S", "V"]
    a, b = model.for_sequence("AS"), again.for_sequence("AS")
    x, log_q = a.sample(16, seed=1)
    np.testing.assert_allclose(b.log_prob(x), log_q, atol=1e-5)
    a.save(tmp_path / "as.safetensors")  # one peptide's model, usable wherever a model file is
    np.testing.assert_allclose(ArBG.load(tmp_path / "as.safetensors").log_prob(x), log_q, atol=1e-5)
    with pytest.raises(ValueError, match="transferable model of many peptides"):
        ArBG.load(path)
    with pytest.raises(ValueError, match="single-molecule model, not a transferable one"):
        TransferableArBG.load(tmp_path / "as.safetensors")


def test_zero_shot_model_in_an_arbg_move(model, tmp_path):
    """The zero-shot model of a held-out peptide, saved as its own file, drives ArBGMove on that
    peptide's System."""
    from openmmtools import cache, states

    from openmm_arbg import ArBG, ArBGMove
    from openmm_arbg.simulation.systems import capped_peptide

    ms = capped_peptide("T", implicit_solvent=False)
    path = model.for_topology(ms.topology, ms.positions_nm()).save(tmp_path / "t.safetensors")
    thermo = states.ThermodynamicState(ms.system, temperature=ms.temperature)
    sampler_state = states.SamplerState(ms.positions)
    move = ArBGMove(ArBG.load(path), n_attempts=5)
    move.apply(thermo, sampler_state, context_cache=cache.ContextCache(capacity=1))
    assert move.n_proposed == 5 and 0 <= move.n_accepted <= 5


def _coordinates_moved_by_chi1(arbg, sequence, residue="VAL"):
    """How many model coordinates change when a residue's side chain turns rigidly about CA-CB."""
    top, x = built(sequence)
    graph = MolecularGraph.from_topology(top)
    turned = turn_about_bond(x, graph, atom_index(graph, residue, "CA"), atom_index(graph, residue, "CB"), 0.7)
    z0, z1 = (arbg.to_model_coordinates(p[None])[0][0] for p in (x, turned))
    return n_coordinates_changed(z0, z1)


def test_new_models_measure_branch_torsions_from_a_sibling(peptides, tmp_path):
    """New transferable models measure branch torsions from a sibling (a turn about CA-CB moves one
    coordinate of valine); files without the setting keep the parent-based Z-matrix they were
    trained with, bit for bit; the setting survives saving and loading; both stay exact."""
    from openmm_arbg.molecule.representation import SIBLING

    train = [peptides[s] for s in "ASV"]
    new = TransferableArBG.create(train, NETWORK, n_bins=32, seed=3)
    old = TransferableArBG.create(train, NETWORK, n_bins=32, seed=3, branch_torsions="parent")
    assert new.branch_torsions == "sibling" and new.bins == old.bins  # the bins do not depend on the setting
    assert new.for_sequence("V").representation.branches == SIBLING
    assert old.for_sequence("V").representation.branches is None
    assert _coordinates_moved_by_chi1(new.for_sequence("AV"), "AV") == 1
    assert _coordinates_moved_by_chi1(old.for_sequence("AV"), "AV") >= 3
    assert "branch_torsions" not in old.checkpoint_config()["transferable"]  # as files of earlier versions
    again = TransferableArBG.load(new.save(tmp_path / "new.safetensors"))
    assert again.branch_torsions == "sibling"
    old_file = TransferableArBG.load(old.save(tmp_path / "old.safetensors"))  # as a file of an earlier version
    assert old_file.branch_torsions == "parent" and old_file.for_sequence("V").representation.branches is None
    for model in (again, old_file):
        arbg = model.for_sequence("TV")  # held out
        x, log_q = arbg.sample(32, seed=2)
        np.testing.assert_allclose(arbg.log_prob(x), log_q, atol=1e-5)
        assert arbg.check_stereo(x).all()
    shipped = TransferableArBG.from_pretrained("capped_peptides_transferable")  # retrained in 0.3.1
    assert shipped.branch_torsions == "sibling" and shipped.for_sequence("T").representation.branches == SIBLING
    with pytest.raises(ValueError, match="branch_torsions must be one of"):
        TransferableArBG.create(train, NETWORK, n_bins=32, branch_torsions="cousin")


def test_resuming_a_run_of_other_branch_torsions_names_the_setting(peptides, tmp_path):
    from openmm_arbg.training.transferable import TransferableTrainer

    train = [peptides[s] for s in "AS"]
    config = dict(n_steps=4, eval_interval=2, batch_size=8, molecules_per_step=2, warmup_steps=1)
    old = TransferableArBG.create(train, NETWORK, n_bins=32, seed=3, branch_torsions="parent")
    TransferableTrainer(old, train, [], config, tmp_path, progress=False).fit(stop_after=2)
    with pytest.raises(ValueError, match="--branch-torsions parent"):
        TransferableTrainer(TransferableArBG.create(train, NETWORK, n_bins=32, seed=3), train, [], config, tmp_path,
                            progress=False)


def test_trainer_improves_held_out_nll_and_resumes_exactly(peptides, tmp_path):
    from openmm_arbg.training.transferable import TransferableTrainer

    train, valid = [peptides[s] for s in "ASV"], [peptides["T"]]
    config = dict(n_steps=40, eval_interval=10, batch_size=16, molecules_per_step=2, learning_rate=3e-3, warmup_steps=5)

    def fresh():
        return TransferableArBG.create(train, NETWORK, n_bins=32, seed=3)

    full = TransferableTrainer(fresh(), train, valid, config, tmp_path / "a", progress=False).fit()
    assert full[-1]["val_nll"] < full[0]["val_nll"] - 0.05  # the held-out sequence's NLL falls
    TransferableTrainer(fresh(), train, valid, config, tmp_path / "b", progress=False).fit(stop_after=20)
    resumed = TransferableTrainer(fresh(), train, valid, config, tmp_path / "b", progress=False).fit()
    assert [r["val_nll"] for r in resumed] == pytest.approx([r["val_nll"] for r in full], abs=1e-9)
    saved = TransferableArBG.load(tmp_path / "a" / "model.safetensors")
    assert saved.sequences == ["A", "S", "V"] and saved.metadata["training"]["validation_sequences"] == ["T"]
    with pytest.raises(ValueError, match="also training sequences"):
        TransferableTrainer(fresh(), train, [peptides["A"]], config, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="other training settings"):
        TransferableTrainer(fresh(), train, valid, dict(config, learning_rate=1e-3), tmp_path / "b", progress=False)


def test_command_line_train_and_zero_shot_sample(peptides, tmp_path, capsys, monkeypatch):
    import mdtraj

    monkeypatch.setenv("OPENMM_ARBG_CACHE", str(tmp_path / "cache"))

    from openmm_arbg.cli import main

    folders = {}
    for s in ("A", "S", "V", "T"):
        top, x = peptides[s]
        folder = tmp_path / f"md_{s}" / "310K"
        folder.mkdir(parents=True)
        traj = mdtraj.Trajectory(x.astype(np.float32), mdtraj.Topology.from_openmm(top))
        traj[0].save_pdb(str(folder / "topology.pdb"))
        traj.save_dcd(str(folder / "trajectory.dcd"))
        folders[s] = str(tmp_path / f"md_{s}")
    out = tmp_path / "tr"
    assert main(["train-transferable", "--md", folders["A"], folders["S"], folders["V"], "--validation-md", folders["T"], "--n-bins", "32",
                 "--n-layer", "1", "--n-head", "2", "--d-model", "32", "--n-steps", "10", "--warmup-steps", "2", "--eval-interval", "5",
                 "--batch-size", "8", "--output", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "training: A (64 frames), S (64 frames), V (64 frames)" in text and "validation: T (64 frames)" in text
    model = str(out / "model.safetensors")
    assert main(["sample", "--model", model, "--system", "peptide:AS", "--n", "20", "--temperature", "310"]) == 0
    assert "used zero-shot for ace-as-nme-obc1" in capsys.readouterr().out
    # a chain of ArBG moves refers to its model by file: the zero-shot model is kept in the cache, found again
    chain = ["mcmc", "--model", model, "--system", "peptide:AS", "--iterations", "2", "--attempts", "3", "--quiet"]
    assert main(chain + ["--output", str(tmp_path / "chain.dcd")]) == 0
    saved = list((tmp_path / "cache" / "zero_shot").glob("*.safetensors"))
    assert len(saved) == 1 and "2 iterations" in capsys.readouterr().out
    assert main(chain + ["--output", str(tmp_path / "chain2.dcd")]) == 0
    assert list((tmp_path / "cache" / "zero_shot").glob("*.safetensors")) == saved
    assert main(["sample", "--model", model, "--n", "20"]) == 2
    assert "say which with --system" in capsys.readouterr().err
    # fine-tuning on the held-out peptide's own frames starts from the transferable model
    t_folder = tmp_path / "md_T" / "310K"
    tuned = tmp_path / "tuned"
    assert main(["train", "--trajectories", str(t_folder / "trajectory.dcd"), "--topology", str(t_folder / "topology.pdb"),
                 "--init-from", model, "--n-steps", "4", "--eval-interval", "2", "--batch-size", "8", "--warmup-steps", "1",
                 "--output", str(tuned), "--quiet"]) == 0
    from openmm_arbg import ArBG

    fine = ArBG.load(tuned / "model.safetensors")
    assert fine.feature_scheme == "peptide" and fine.metadata["fine_tuned_from"] == model
    x, log_q = fine.sample(8, seed=0)
    np.testing.assert_allclose(fine.log_prob(x), log_q, atol=1e-5)
    assert main(["train", "--trajectories", str(t_folder / "trajectory.dcd"), "--topology", str(t_folder / "topology.pdb"),
                 "--init-from", model, "--n-layer", "2", "--output", str(tmp_path / "t2")]) == 2
    assert "drop --n-layer" in capsys.readouterr().err
    assert main(["train-transferable", "--md", str(tmp_path / "nowhere")]) == 2
    # the validation peptide's chemistry must be known from the training ones: refused by name
    assert main(["train-transferable", "--md", folders["A"], folders["S"], "--validation-md", folders["T"],
                 "--output", str(tmp_path / "tr2"), "--quiet"]) == 2
    assert "never seen coordinates of 1 kind in this molecule (angle:C4-C4-C4)" in capsys.readouterr().err


def test_peptide_md_for_many_sequences_resumes(tmp_path):
    from openmm_arbg.cli.train_transferable import md_files, read_molecules
    from openmm_arbg.simulation.peptide_data import generate_peptide_md

    kwargs = dict(ns=0.002, report_ps=0.1, equilibration_ps=0.0, seed=1, progress=False)
    first = generate_peptide_md(["G", "A"], tmp_path, **kwargs)
    assert {s: n for s, (n, _) in first.items()} == {"G": 20, "A": 20}
    again = generate_peptide_md(["G", "A"], tmp_path, **kwargs)  # finished runs are read back, not redone
    assert again == first
    (topology, x), = read_molecules([str(tmp_path / "md_A")], stride=1)
    assert x.shape == (20, 22, 3) and md_files(str(tmp_path / "md_A"))[0] == first["A"][1]
    with pytest.raises(ValueError, match="other"):  # other settings for an existing run are refused
        generate_peptide_md(["A"], tmp_path, **dict(kwargs, seed=2))


def test_time_budget_sets_the_schedule(peptides, tmp_path):
    from openmm_arbg.training.transferable import TransferableTrainer

    train = [peptides[s] for s in "AS"]
    model = TransferableArBG.create(train, NETWORK, n_bins=32, seed=3)
    config = dict(n_steps=100000, time_budget_s=4.0, eval_interval=10, batch_size=8, molecules_per_step=2)
    trainer = TransferableTrainer(model, train, [], config, tmp_path / "a", progress=False)
    trainer.fit()
    assert trainer.budget_fitted and 25 < trainer.config.n_steps < 100000 and trainer.step == trainer.config.n_steps
    assert trainer.learning_rate(trainer.step) < 0.1 * trainer.config.learning_rate  # the cosine decayed in time


def test_time_budget_shorter_than_the_warm_up_still_peaks_and_decays(peptides, tmp_path, capsys):
    from openmm_arbg.training.transferable import TransferableTrainer

    train = [peptides[s] for s in "AS"]
    model = TransferableArBG.create(train, NETWORK, n_bins=32, seed=3)
    config = dict(n_steps=100000, time_budget_s=3.0, warmup_steps=50000, eval_interval=10, batch_size=8, molecules_per_step=2)
    trainer = TransferableTrainer(model, train, [], config, tmp_path / "a", progress=True)
    rows = trainer.fit()
    n = trainer.config.n_steps
    assert n < 50000 and "warming up over" in capsys.readouterr().out
    assert max(r["lr"] for r in rows) > 0.5 * trainer.config.learning_rate  # the peak was reached
    assert trainer.learning_rate(n) < 0.1 * trainer.config.learning_rate


def test_shipped_transferable_model_on_held_out_sequences():
    """The shipped model covers all 20 amino acids, keeps its training list, and gives exact,
    right-handed densities zero-shot for sequences it never saw (AT, TY, QV: held out in
    docs/benchmarks.md section 27)."""
    from openmm_arbg.simulation.peptides import ONE_LETTER

    model = TransferableArBG.from_pretrained("capped_peptides_transferable")
    assert set("".join(model.sequences)) == set(ONE_LETTER)
    for sequence in ("AT", "TY", "QV"):
        assert sequence not in model.sequences
        arbg = model.for_sequence(sequence)
        x, log_q = arbg.sample(32, seed=0)
        np.testing.assert_allclose(arbg.log_prob(x), log_q, atol=1e-5)
        assert arbg.check_stereo(x).all()


DDP_SCRIPT = """
import sys, numpy as np, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[3])
from conftest import atom_index, jittered, n_coordinates_changed, turn_about_bond
from openmm_arbg.simulation.peptides import build_capped_peptide
from openmm_arbg.transferable import TransferableArBG
from openmm_arbg.training.transferable import TransferableTrainer
out, world = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
if world > 1:
    dist.init_process_group("gloo")
mols = []
for i, s in enumerate(["A", "S", "V", "AS"]):
    top, pos = build_capped_peptide(s)[:2]
    mols.append((top, jittered(np.asarray(pos.value_in_unit(pos.unit)), 32, scale=0.004, seed=i)))
model = TransferableArBG.create(mols, dict(n_layer=1, n_head=2, d_model=32), n_bins=32, seed=3)
cfg = dict(n_steps=8, eval_interval=4, batch_size=8, molecules_per_step=4, learning_rate=3e-3, warmup_steps=2, seed=1)
TransferableTrainer(model, mols, [], cfg, out, progress=False).fit()
if world > 1:
    dist.destroy_process_group()
"""


def test_distributed_training_agrees_with_one_process(tmp_path):
    """torchrun with 2 processes (gloo): each takes half of a step's molecules and the gradients are
    averaged, so the weights equal those of one process taking all of them."""
    import os
    import subprocess
    import sys

    from openmm_arbg.model.checkpoint import read_checkpoint

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "1", tests], check=True, env=env, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                    str(tmp_path / "two"), "2", tests], check=True, env=env, timeout=300)
    a = read_checkpoint(tmp_path / "one" / "checkpoint.safetensors")[1]
    b = read_checkpoint(tmp_path / "two" / "checkpoint.safetensors")[1]
    for k in a:
        if k.startswith("network."):
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_streamed_coordinates_train_alike(peptides, tmp_path):
    """Frames loaded by functions, coordinates written to disk and memory-mapped: the same
    learning curve as in memory, and nothing held in memory but the maps."""
    from openmm_arbg.training.transferable import TransferableTrainer

    train, valid = [peptides[s] for s in "ASV"], [peptides["T"]]
    lazy = [(top, (lambda x=x: x)) for top, x in train]
    config = dict(n_steps=12, eval_interval=6, batch_size=8, molecules_per_step=2, warmup_steps=2)
    fresh = lambda: TransferableArBG.create(lazy, NETWORK, n_bins=32, seed=3)  # noqa: E731
    memory = TransferableTrainer(fresh(), train, valid, config, tmp_path / "a", progress=False).fit()
    trainer = TransferableTrainer(fresh(), lazy, valid, config, tmp_path / "b", progress=False, stream=True)
    assert all(isinstance(z, np.memmap) for _, z in trainer.train + trainer.valid)
    assert len(list((tmp_path / "b" / "coordinates").glob("*.npy"))) == 4
    assert [r["val_nll"] for r in trainer.fit()] == pytest.approx([r["val_nll"] for r in memory], abs=1e-12)
