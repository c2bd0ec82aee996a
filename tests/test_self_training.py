"""Self-training by importance sampling (openmm_arbg.training.self_training).

(a) The training distribution of MD frames sampled at a high temperature, reweighted to the
    target temperature, reproduces the target's exact laws on the analytic chain (the weights
    self-training trains on are right), within 4.5 standard errors.
(b) Self-training from an untrained model, with no MD at all, raises ESS/N on the analytic chain,
    and the importance-sampling estimates of the final model agree with the exact laws.
(c) The final model is an ordinary exact model: ``log q`` of its samples equals ``log_prob``.
(d) The annealing ladder is geometric and ends at the target; a run stopped after a round and
    resumed gives the same learning curve as one that ran straight through.
(e) Alanine dipeptide (a second molecule) with MD frames at two temperatures, through the API and
    the ``arbg self-train`` command; bad input is refused with a message.
"""

import json
import csv
import math

import numpy as np
import pytest
import torch

from openmm_arbg import ArBG
from openmm_arbg.sampling.importance import weighted_mean
from openmm_arbg.simulation.testsystems import harmonic_chain
from openmm_arbg.training import SelfTrainer, SelfTrainingConfig, temperature_ladder

from conftest import TINY_NETWORK, chain_geometry, exact_chain_states, jittered

N_SIGMA = 4.5


@pytest.fixture(scope="module")
def chain5():
    ms, analytic = harmonic_chain(5)
    return ms, analytic, exact_chain_states(analytic, 3000, seed=41)


def _untrained(chain, seed=3):
    ms, _, frames = chain
    return ArBG.from_data(ms.topology, frames, n_bins=32, network=TINY_NETWORK, seed=seed)


def test_md_frames_are_reweighted_exactly_to_the_target_temperature(chain5, tmp_path):
    ms, analytic, _ = chain5
    hot = exact_chain_states(analytic, 20000, seed=43, temperature_K=450.0)
    model = ArBG.from_data(ms.topology, hot, n_bins=32, network=TINY_NETWORK, seed=3)
    trainer = SelfTrainer(model, ms.system, dict(temperature=300.0, n_proposals=500), md=[(hot, 450.0)], output_dir=tmp_path,
                          progress=False)
    z, log_p, sizes = trainer._group_log_weights(300.0)
    assert np.isclose(np.exp(log_p).sum(), 1.0)
    x, _ = model.representation.from_model_coordinates(z)
    r, theta, phi = chain_geometry(ms.topology, x.numpy())
    checks = [
        ("cos 3phi", np.cos(3 * phi[:, -1]), analytic.expectation("torsion", lambda p: np.cos(3 * p))),
        ("r", r[:, 0], analytic.expectation("bond", lambda v: v)),
        ("cos theta", np.cos(theta[:, 1]), analytic.expectation("angle", np.cos)),
    ]
    hot_value = analytic.expectation("bond", lambda v: v, temperature_K=450.0)
    for name, values, exact in checks:
        est, err = weighted_mean(values, log_p, rng=1)
        assert abs(est - exact) < N_SIGMA * err, (name, est, exact, err)
    assert abs(np.mean(r[:, 0]) - hot_value) < 1e-3  # unweighted, the frames are the hot ones
    assert 0 < sizes[0] < len(hot)  # Kish ESS of the reweighted frames
    # with proposals in the buffer, MD takes at most md_share of the training mixture
    _, fresh = trainer._measure(300.0)
    trainer.buffer = [fresh]
    for share in (0.25, 0.0):
        trainer.config.md_share = share
        _, log_p, _ = trainer._group_log_weights(300.0)
        assert np.isclose(np.exp(log_p[len(fresh["z"]):]).sum(), share)


def test_self_training_without_md_improves_the_proposal_and_stays_exact(chain5, tmp_path):
    ms, analytic, _ = chain5
    model = _untrained(chain5)
    config = dict(n_rounds=4, n_proposals=3000, n_steps=20, batch_size=256, learning_rate=3e-3, warmup_steps=10, weight_cap=0.003,
                  seed=2)
    history = SelfTrainer(model, ms.system, config, output_dir=tmp_path, progress=False).fit()
    ess = [row["ess_fraction"] for row in history]
    assert len(history) == 5 and history[-1]["train_nll"] != history[-1]["train_nll"]  # final row: measured, not trained
    assert ess[-1] > 10 * ess[0] and ess[-1] > 0.2, ess  # measured: 0.15 % -> 78 %
    assert history[-1]["energy_evaluations"] == sum(round(config["n_proposals"] * (1 - r["wrong_handed_fraction"])) for r in history)
    # the model left in place is the best one saved, and it is exact: IS against the exact laws
    best = ArBG.load(tmp_path / "model.safetensors")
    for a, b in zip(best.network_tensors().values(), model.network_tensors().values()):
        assert torch.equal(a, b)
    x, log_q = model.sample(4000, seed=9)
    np.testing.assert_allclose(log_q, model.log_prob(x), rtol=0, atol=1e-5)  # float32 network, KV cache vs one pass
    from openmm_arbg.sampling.energies import ReducedPotential

    with ReducedPotential(ms.system, temperature=300.0) as u:
        log_w = -u(x) - log_q
    r, theta, phi = chain_geometry(ms.topology, x)
    for name, values, exact in [
        ("phi > 0", (phi[:, 0] > 0).astype(float), analytic.probability("torsion", 0.0, math.pi)),
        ("cos 3phi", np.cos(3 * phi[:, 1]), analytic.expectation("torsion", lambda p: np.cos(3 * p))),
        ("r", r[:, 2], analytic.expectation("bond", lambda v: v)),
    ]:
        est, err = weighted_mean(values, log_w, rng=3)
        assert abs(est - exact) < N_SIGMA * err, (name, est, exact, err)
    with open(tmp_path / "learning_curve.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    assert (tmp_path / "learning_curve.png").stat().st_size > 0


def test_annealing_ladder():
    c = SelfTrainingConfig(temperature=300.0, start_temperature=1200.0, anneal_rounds=2, n_rounds=4)
    np.testing.assert_allclose(temperature_ladder(c), [1200.0, 600.0, 300.0, 300.0, 300.0])
    assert temperature_ladder(SelfTrainingConfig(n_rounds=2)) == [300.0] * 3
    for bad, words in [
        (dict(anneal_rounds=2), "needs start_temperature"),
        (dict(start_temperature=200.0), "below the target"),
        (dict(start_temperature=600.0, anneal_rounds=9, n_rounds=3), "must not exceed n_rounds"),
        (dict(n_proposals=0), "n_proposals must be an integer >= 2"),
        (dict(weight_cap=1.5), "weight_cap must be a number in [0, 1]"),
        (dict(ema_decay=1.0), "ema_decay must be below 1"),
        (dict(temperature=-3.0), "temperature must be a number > 0"),
    ]:
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            SelfTrainingConfig(**bad)


@pytest.mark.parametrize("ema_decay", [0.0, 0.8])
def test_stopped_and_resumed_run_gives_the_same_curve(chain5, tmp_path, ema_decay):
    ms, analytic, _ = chain5
    hot = exact_chain_states(analytic, 600, seed=44, temperature_K=600.0)
    config = dict(n_rounds=3, n_proposals=300, n_steps=8, start_temperature=600.0, anneal_rounds=2, seed=5, ema_decay=ema_decay)
    straight = SelfTrainer(_untrained(chain5), ms.system, config, md=[(hot, 600.0)], output_dir=tmp_path / "a",
                           progress=False).fit()
    first = SelfTrainer(_untrained(chain5), ms.system, config, md=[(hot, 600.0)], output_dir=tmp_path / "b", progress=False)
    first.fit(stop_after=1)
    assert first.round == 1 and len(first.history) == 1
    resumed = SelfTrainer(_untrained(chain5), ms.system, config, md=[(hot, 600.0)], output_dir=tmp_path / "b", progress=False)
    assert resumed.round == 1
    history = resumed.fit()
    drop = ("measure_s", "elapsed_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in straight]
    with pytest.raises(ValueError, match="other self-training settings"):
        SelfTrainer(_untrained(chain5), ms.system, dict(config, n_steps=9), md=[(hot, 600.0)], output_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="other MD frames"):
        SelfTrainer(_untrained(chain5), ms.system, config, md=[(hot[:500], 600.0)], output_dir=tmp_path / "b")
    import openmm

    other = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ms.system))  # another force field
    force = other.getForce(0)
    force.setBondParameters(0, *force.getBondParameters(0)[:2], 0.2, 1000.0) if isinstance(force, openmm.HarmonicBondForce) \
        else other.addForce(openmm.HarmonicBondForce())
    with pytest.raises(ValueError, match="another OpenMM System"):
        SelfTrainer(_untrained(chain5), other, config, md=[(hot, 600.0)], output_dir=tmp_path / "b")


@pytest.fixture(scope="module")
def alanine_model_and_frames(alanine, tmp_path_factory):
    frames = jittered(alanine.positions_nm(), 400, 0.004, seed=6)
    model = ArBG.from_data(alanine.topology, frames, n_bins=32, network=TINY_NETWORK, seed=4)
    path = tmp_path_factory.mktemp("alanine_st") / "start.safetensors"
    model.save(path)
    return path, frames


def test_alanine_with_md_at_two_temperatures(alanine, alanine_model_and_frames, tmp_path):
    path, frames = alanine_model_and_frames
    model = ArBG.load(path)
    config = dict(n_rounds=2, n_proposals=400, n_steps=5, start_temperature=600.0, anneal_rounds=1, seed=1)
    trainer = SelfTrainer(model, alanine.system, config, md=[(frames[:200], 300.0), (frames[200:], 600.0)],
                          states={"C7ax": "phi > 0"}, output_dir=tmp_path, progress=False)
    history = trainer.fit()
    assert [r["temperature_K"] for r in history] == [600.0, 300.0, 300.0]
    assert history[0]["energy_evaluations"] == 400 + round(400 * (1 - history[0]["wrong_handed_fraction"]))
    assert all(0 <= r["P_C7ax"] <= 1 and r["P_C7ax_error"] >= 0 for r in history if r["ess_fraction"] > 0)
    x, log_q = model.sample(64, seed=2)
    np.testing.assert_allclose(log_q, model.log_prob(x), rtol=0, atol=1e-5)  # float32 network, KV cache vs one pass
    with pytest.raises(ValueError, match="not a self-training checkpoint"):
        import shutil

        (tmp_path / "other").mkdir()
        shutil.copy(path, tmp_path / "other" / "checkpoint.safetensors")
        SelfTrainer(ArBG.load(path), alanine.system, config, output_dir=tmp_path / "other")
    with pytest.raises(ValueError, match=r"\(positions, temperature_K\) pairs"):
        SelfTrainer(ArBG.load(path), alanine.system, config, md=[frames], output_dir=tmp_path / "x")


def test_cli_self_train(alanine_model_and_frames, tmp_path, capsys):
    import mdtraj

    from openmm_arbg.cli import main
    from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum

    path, frames = alanine_model_and_frames
    top = mdtraj.Topology.from_openmm(alanine_dipeptide_vacuum().topology)
    traj = tmp_path / "md" / "trajectory.dcd"
    traj.parent.mkdir()
    mdtraj.Trajectory(frames[:100].astype(np.float32), top).save_dcd(str(traj))
    mdtraj.Trajectory(frames[:1].astype(np.float32), top).save_pdb(str(traj.parent / "topology.pdb"))
    out = tmp_path / "st"
    argv = ["self-train", "--model", str(path), "--trajectories", str(traj), "--trajectory-temperatures", "300",
            "--n-rounds", "1", "--n-proposals", "200", "--n-steps", "3", "--output", str(out), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "the MD's cost is not known" in text and "final model: ESS/N" in text
    for name in ("model.safetensors", "last.safetensors", "checkpoint.safetensors", "learning_curve.csv", "learning_curve.png"):
        assert (out / name).exists(), name
    assert main(argv) == 0 and "resuming from" in capsys.readouterr().out
    assert main(argv[:5] + argv[7:]) == 2
    assert "give the temperature of each trajectory with --trajectory-temperatures" in capsys.readouterr().err
    # arbg md's settings.json beside the trajectory says its temperature
    (traj.parent / "settings.json").write_text(json.dumps(dict(system="alanine_dipeptide_vacuum", system_sha256="x",
                                                               temperature_K=300.0)))
    assert main(argv[:5] + argv[7:-3] + ["--output", str(tmp_path / "st2"), "--quiet"]) == 0
    assert main(["self-train", "--model", str(path), "--state", "phi>0", "--output", str(tmp_path / "y")]) == 2
    assert "NAME=EXPRESSION" in capsys.readouterr().err


def test_tempering_exponent_meets_the_ess_target(chain5, tmp_path):
    from openmm_arbg.physics import kT_kJ_per_mol
    from openmm_arbg.sampling.importance import effective_sample_size

    ms, _, _ = chain5
    trainer = SelfTrainer(_untrained(chain5), ms.system, dict(n_proposals=100, ess_target=0.2), output_dir=tmp_path, progress=False)
    rng = np.random.default_rng(0)
    kT = kT_kJ_per_mol(300.0)
    for spread, degenerate in ((5.0, True), (0.1, False)):
        log_w = spread * rng.standard_normal(4000)
        trainer.buffer = [dict(z=None, energy=-kT * log_w, log_q=np.zeros(4000), temperature=300.0)]
        alpha = trainer.tempering_exponent(300.0)
        if degenerate:
            assert 0 < alpha < 1 and np.isclose(effective_sample_size(alpha * log_w), 800, rtol=1e-3)
        else:
            assert alpha == 1.0
    trainer.config.ess_target = 0.0
    assert trainer.tempering_exponent(300.0) == 1.0


def test_stratified_training_keeps_the_models_state_populations(chain5, tmp_path):
    ms, _, _ = chain5
    states = {"up": lambda x: _first_torsion(ms, x) > 1.0}
    trainer = SelfTrainer(_untrained(chain5), ms.system, dict(n_proposals=2000, stratify=True, weight_cap=0.003), states=states,
                          output_dir=tmp_path, progress=False)
    _, fresh = trainer._measure(300.0)
    trainer.buffer = [fresh]
    _, log_p, _ = trainer._group_log_weights(300.0)
    valid = np.isfinite(fresh["energy"])
    up = valid & (fresh["stratum"] == 0)
    assert 0.05 < up.sum() / valid.sum() < 0.95
    assert np.isclose(np.exp(log_p[up]).sum(), up.sum() / valid.sum())  # the model's own share, not the weights'
    from openmm_arbg.sampling.importance import effective_sample_size

    log_w = -trainer.potential.beta * fresh["energy"] - fresh["log_q"]
    for k in (0, 1):  # each state's own alpha spreads its weights to the ESS target
        alpha, members = trainer.tempering_exponent(300.0, k), fresh["stratum"] == k
        assert 0 < alpha <= 1
        assert alpha == 1 or np.isclose(effective_sample_size(alpha * log_w[members]), 0.1 * members.sum(), rtol=1e-3)
    trainer.config.stratify = False
    _, log_p, _ = trainer._group_log_weights(300.0)
    assert not np.isclose(np.exp(log_p[up]).sum(), up.sum() / valid.sum(), rtol=1e-2)
    with pytest.raises(ValueError, match="give states"):
        SelfTrainer(_untrained(chain5), ms.system, dict(stratify=True), output_dir=tmp_path / "b")


def _first_torsion(ms, x):
    return chain_geometry(ms.topology, x)[2][:, 0]


def test_cli_self_train_targets_the_systems_temperature(tmp_path, capsys):
    """A capped peptide's built-in system is at 310 K: without --temperature, so is self-training."""
    from openmm_arbg.cli import main
    from openmm_arbg.simulation.systems import build_system

    ms = build_system("peptide:AG")
    model = ArBG.from_data(ms.topology, jittered(ms.positions_nm(), 200, 0.003, seed=8), n_bins=32, network=TINY_NETWORK, seed=4)
    model.save(tmp_path / "start.safetensors")
    argv = ["self-train", "--model", str(tmp_path / "start.safetensors"), "--n-rounds", "1", "--n-proposals", "50", "--n-steps", "1",
            "--output", str(tmp_path / "st"), "--quiet"]
    assert main(argv) == 0
    with open(tmp_path / "st" / "learning_curve.csv") as f:
        assert {float(r["temperature_K"]) for r in csv.DictReader(f)} == {310.0}
    assert "at 310 K" in capsys.readouterr().out


def test_ema_weights_propose_and_are_saved_and_old_checkpoints_resume(chain5, tmp_path):
    """With ema_decay the saved models hold the moving average the checkpoint stores, not the raw
    weights the optimiser steps, and proposals from it are exact; a checkpoint written before
    ema_decay existed resumes as ema_decay = 0 and is refused with another value."""
    from openmm_arbg.model.checkpoint import read_checkpoint, write_checkpoint

    ms, _, _ = chain5
    config = dict(n_rounds=2, n_proposals=300, n_steps=10, learning_rate=3e-3, warmup_steps=2, seed=7, ema_decay=0.8)
    trainer = SelfTrainer(_untrained(chain5), ms.system, config, output_dir=tmp_path / "ema", progress=False)
    trainer.fit()
    _, ckpt = read_checkpoint(tmp_path / "ema" / "checkpoint.safetensors")
    last = ArBG.load(tmp_path / "ema" / "last.safetensors")
    ema = {k[len("self_training.ema."):]: v for k, v in ckpt.items() if k.startswith("self_training.ema.")}
    raw = {k: v for k, v in ckpt.items() if k in ema}
    saved = last.network_tensors()
    assert set(saved) == set(ema) and all(torch.equal(saved[k], ema[k]) for k in saved)
    assert any(not torch.equal(raw[k], ema[k]) for k in ema if raw[k].dtype.is_floating_point)
    x, log_q = last.sample(500, seed=1)
    np.testing.assert_allclose(log_q, last.log_prob(x), rtol=0, atol=1e-5)
    # an old checkpoint: no ema_decay among its settings
    plain = dict(config, ema_decay=0.0, n_rounds=3)
    SelfTrainer(_untrained(chain5), ms.system, dict(plain, n_rounds=1), output_dir=tmp_path / "old", progress=False).fit(stop_after=1)
    path = tmp_path / "old" / "checkpoint.safetensors"
    meta, tensors = read_checkpoint(path)
    del meta["self_training"]["schedule"]["ema_decay"]
    write_checkpoint(path, meta, tensors)
    assert SelfTrainer(_untrained(chain5), ms.system, plain, output_dir=tmp_path / "old", progress=False).round == 1
    with pytest.raises(ValueError, match="ema_decay"):
        SelfTrainer(_untrained(chain5), ms.system, dict(plain, ema_decay=0.5), output_dir=tmp_path / "old", progress=False)


def test_model_kept_only_from_rounds_with_reliable_weights(chain5, tmp_path):
    """A round replaces the kept model only with Pareto k < 1/2; a larger ESS/N from a heavy-tailed
    draw (the luck of one draw) does not displace it, and the rule survives a resume."""
    from openmm_arbg.training.self_training import RELIABLE_PARETO_K

    ms, _, _ = chain5
    trainer = SelfTrainer(_untrained(chain5), ms.system, dict(n_rounds=2, n_proposals=50), output_dir=tmp_path, progress=False)

    def keep(ess, k):
        row = dict(ess_fraction=ess, pareto_k=k)
        if trainer._keeps(row):
            trainer.best_ess, trainer.best_reliable = ess, trainer._reliable(row)
            return True
        return False

    assert keep(0.01, 0.62)  # the first model measured: kept whatever its weights
    assert not keep(0.0435, 0.58)  # more ESS/N, but heavy-tailed weights
    assert not keep(0.5, float("nan"))
    assert keep(0.005, RELIABLE_PARETO_K - 0.01)  # reliable weights replace an unreliable kept model
    assert not keep(0.004, 0.3) and keep(0.02, 0.3)  # between reliable rounds: the larger ESS/N
    assert not keep(0.9, RELIABLE_PARETO_K)
    trainer._save_checkpoint()
    resumed = SelfTrainer(_untrained(chain5), ms.system, dict(n_rounds=2, n_proposals=50), output_dir=tmp_path, progress=False)
    assert resumed.best_ess == 0.02 and resumed.best_reliable
