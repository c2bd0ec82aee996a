"""Trainer: time-block validation, exact resume, clear errors, DistributedDataParallel agreement."""

import os
import subprocess
import sys
import textwrap

import mdtraj
import numpy as np
import pytest
import torch

from openmm_arbg import ArBG
from openmm_arbg.model.checkpoint import read_checkpoint
from openmm_arbg.simulation.md import run_md
from openmm_arbg.simulation.testsystems import harmonic_chain
from openmm_arbg.training import Trainer, load_trajectories, time_block_split, trajectory_frame_weights

from conftest import TINY_NETWORK

CONFIG = dict(n_steps=30, batch_size=64, learning_rate=3e-3, warmup_steps=5, eval_interval=10, checkpoint_interval=10, ema_decay=0.9, seed=3)


@pytest.fixture(scope="module")
def chain_md(tmp_path_factory):
    ms, _ = harmonic_chain(4)
    out = tmp_path_factory.mktemp("md")
    traj = run_md(ms, str(out), n_steps=40_000, report_interval=20, equilibration_steps=500, progress=False)
    return ms, traj, str(out)


def test_time_block_split():
    train, val = time_block_split(1000, 0.1, 5)
    assert len(val) == 100 and len(train) == 900
    assert len(np.intersect1d(train, val)) == 0
    blocks = np.split(val, np.flatnonzero(np.diff(val) != 1) + 1)
    assert len(blocks) == 5 and all(len(b) == 20 for b in blocks)


def test_training_lowers_validation_nll_and_writes_files(chain_md, tmp_path):
    ms, traj, _ = chain_md
    model = ArBG.from_data(ms.topology, traj, network=TINY_NETWORK, n_bins=32)
    history = Trainer(model, traj, CONFIG, output_dir=tmp_path, progress=False).fit()
    assert history[-1]["val_nll"] < history[0]["val_nll"]
    assert {"model.safetensors", "checkpoint.safetensors", "training_log.csv"} <= set(os.listdir(tmp_path))
    loaded = ArBG.load(tmp_path / "model.safetensors")
    x, lq = loaded.sample(8, seed=0)
    assert np.abs(loaded.log_prob(x) - lq).max() < 1e-4


def test_interrupted_and_resumed_run_ends_where_uninterrupted_run_does(chain_md, tmp_path):
    ms, traj, _ = chain_md
    full = ArBG.from_data(ms.topology, traj, network=TINY_NETWORK, n_bins=32, seed=5)
    Trainer(full, traj, CONFIG, output_dir=tmp_path / "full", progress=False).fit()

    part = ArBG.from_data(ms.topology, traj, network=TINY_NETWORK, n_bins=32, seed=5)
    Trainer(part, traj, CONFIG, output_dir=tmp_path / "part", progress=False).fit(stop_after=13)
    # a new process would rebuild everything from the checkpoint
    resumed_model = ArBG.load(tmp_path / "part" / "checkpoint.safetensors")
    trainer = Trainer(resumed_model, traj, CONFIG, output_dir=tmp_path / "part", progress=False)
    assert trainer.step == 13
    trainer.fit()
    a = read_checkpoint(tmp_path / "full" / "checkpoint.safetensors")[1]
    b = read_checkpoint(tmp_path / "part" / "checkpoint.safetensors")[1]
    assert set(a) == set(b)
    for k in a:
        if k.startswith("network.") or k.startswith("trainer.ema.") or k.startswith("trainer.optim."):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_resume_with_other_settings_is_refused(chain_md, tmp_path):
    ms, traj, _ = chain_md
    model = ArBG.from_data(ms.topology, traj, network=TINY_NETWORK, n_bins=32)
    Trainer(model, traj, CONFIG, output_dir=tmp_path, progress=False).fit(stop_after=5)
    with pytest.raises(ValueError, match="other training settings"):
        Trainer(model, traj, dict(CONFIG, learning_rate=1e-2), output_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other frames"):
        Trainer(model, traj[::2], CONFIG, output_dir=tmp_path, progress=False)
    # a run started with the old Z-matrix (before sibling branch torsions were the default) names the flag to resume it
    old = ArBG.from_data(ms.topology, traj, network=TINY_NETWORK, n_bins=32, branch_torsions="parent")
    Trainer(old, traj, CONFIG, output_dir=tmp_path / "old", progress=False).fit(stop_after=5)
    with pytest.raises(ValueError, match="--branch-torsions parent"):
        Trainer(model, traj, CONFIG, output_dir=tmp_path / "old", progress=False)
    Trainer(ArBG.from_data(ms.topology, traj, network=TINY_NETWORK, n_bins=32, branch_torsions="parent"), traj, CONFIG,
            output_dir=tmp_path / "old", progress=False)  # and with it, it resumes


def test_frame_weights_set_batch_frequencies_and_the_validation_mean(chain_md, tmp_path):
    """Weighted frames: batches draw each training frame with probability proportional to its weight
    (frames of weight 0 never), the validation NLL is the weighted mean, and a resume with other
    weights is refused."""
    ms, traj, _ = chain_md
    n = traj.n_frames
    weights = trajectory_frame_weights([n // 2, n - n // 2], [1.0, 3.0])
    weights[:50] = 0.0
    model = ArBG.from_data(ms.topology, traj, network=TINY_NETWORK, n_bins=32)
    trainer = Trainer(model, traj, CONFIG, output_dir=tmp_path, progress=False, frame_weights=weights)
    train_idx, val_idx = time_block_split(n, trainer.config.validation_fraction, trainer.config.n_validation_blocks)
    w = weights[train_idx]
    idx = np.concatenate([trainer._batch_indices(step).numpy() for step in range(400)])
    assert not np.isin(idx, np.flatnonzero(w == 0)).any()
    p_heavy = w[train_idx >= n // 2].sum() / w.sum()  # probability of a frame from the weight-3 half
    heavy = np.mean(train_idx[idx] >= n // 2)
    assert abs(heavy - p_heavy) < 5 * np.sqrt(p_heavy * (1 - p_heavy) / len(idx))
    assert np.array_equal(trainer._batch_indices(7).numpy(), trainer._batch_indices(7).numpy())  # resumable: a function of the step
    z_val = trainer.z_val.to(model.device)
    nll = -model.density.log_prob(z_val).double().cpu().numpy()
    expected = np.sum(nll * weights[val_idx]) / (weights[val_idx].sum() * model.n_coords)
    trainer.ema = None  # compare the network's own weights
    assert trainer.validation_nll() == pytest.approx(expected, rel=1e-9)
    trainer.fit(stop_after=5)
    with pytest.raises(ValueError, match="other frames"):
        Trainer(model, traj, CONFIG, output_dir=tmp_path, progress=False, frame_weights=np.ones(n))
    with pytest.raises(ValueError, match="one weight per frame"):
        Trainer(model, traj, CONFIG, output_dir=tmp_path / "b", progress=False, frame_weights=np.ones(n - 1))
    with pytest.raises(ValueError, match="finite and >= 0"):
        Trainer(model, traj, CONFIG, output_dir=tmp_path / "b", progress=False, frame_weights=-np.ones(n))
    with pytest.raises(ValueError, match="one weight per trajectory"):
        trajectory_frame_weights([3, 2], [1.0])


def test_trajectory_errors(chain_md, tmp_path, alanine):
    ms, traj, md_dir = chain_md
    top = os.path.join(md_dir, "topology.pdb")
    dcd = os.path.join(md_dir, "trajectory.dcd")
    from openmm_arbg.molecule.topology import MolecularGraph

    graph = MolecularGraph.from_topology(ms.topology)
    x = load_trajectories([dcd, dcd], top, stride=10, graph=graph)
    assert x.shape == (2 * len(traj[::10]), 4, 3)
    empty = tmp_path / "empty.dcd"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_trajectories([str(empty)], top, graph=graph)
    junk = tmp_path / "junk.dcd"
    junk.write_bytes(os.urandom(500))
    with pytest.raises(ValueError, match="cannot read"):
        load_trajectories([str(junk)], top, graph=graph)
    with pytest.raises(FileNotFoundError):
        load_trajectories([str(tmp_path / "missing.dcd")], top, graph=graph)
    # a trajectory of another molecule
    ala_graph = MolecularGraph.from_topology(alanine.topology)
    with pytest.raises(ValueError, match="4 atoms; the model's molecule has 22"):
        load_trajectories([dcd], top, graph=ala_graph)
    # the right atom count in the wrong order: bonds are broken
    spread = traj.xyz[:, [0, 2, 1, 3]].copy()
    spread[:, 2] += 0.5  # atom 2 now far from its bonded neighbours
    out = tmp_path / "shuffled.dcd"
    mdtraj.Trajectory(spread, traj.topology).save_dcd(str(out))
    with pytest.raises(ValueError, match="atom order"):
        load_trajectories([str(out)], top, graph=graph)


def test_settings_that_do_not_fit_in_memory(chain_md):
    from openmm_arbg.training import check_memory

    with pytest.raises(MemoryError, match="GiB"):
        check_memory(1 << 60, "a test allocation")
    ms, traj, _ = chain_md
    model = ArBG.from_data(ms.topology, traj, network=TINY_NETWORK, n_bins=32)
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(model, traj[:50], dict(CONFIG, batch_size=512), output_dir="unused", progress=False)


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist, mdtraj
    from openmm_arbg import ArBG
    from openmm_arbg.training import Trainer
    md_dir, out, world = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo")
    traj = mdtraj.load(md_dir + "/trajectory.dcd", top=md_dir + "/topology.pdb")
    model = ArBG.from_data(traj.topology, traj, network=dict(n_layer=1, n_head=2, d_model=32), n_bins=32, seed=5)
    cfg = dict(n_steps=12, batch_size=64, learning_rate=3e-3, warmup_steps=3, eval_interval=6, checkpoint_interval=6, seed=3)
    Trainer(model, traj, cfg, output_dir=out, progress=False).fit()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    """
)


def test_distributed_training_agrees_with_single_process(chain_md, tmp_path):
    _, _, md_dir = chain_md
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(script), md_dir, str(tmp_path / "single"), "1"], check=True, env=env, timeout=300)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), md_dir, str(tmp_path / "ddp"), "2"],
        check=True,
        env=env,
        timeout=300,
    )
    a = read_checkpoint(tmp_path / "single" / "checkpoint.safetensors")[1]
    b = read_checkpoint(tmp_path / "ddp" / "checkpoint.safetensors")[1]
    for k in a:
        if k.startswith("network."):
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_sigint_writes_a_checkpoint_and_the_run_resumes(tmp_path):
    """SIGINT (Ctrl-C) during fit: the current step finishes, a checkpoint is written, fit returns
    with ``interrupted``; a new Trainer resumes from that step."""
    import signal
    import threading

    from openmm_arbg import ArBG
    from openmm_arbg.simulation.testsystems import harmonic_chain
    from openmm_arbg.training import Trainer

    from conftest import TINY_NETWORK, exact_chain_states

    ms, analytic = harmonic_chain(4)
    x = exact_chain_states(analytic, 500, seed=2)
    model = ArBG.from_data(ms.topology, x, n_bins=16, network=TINY_NETWORK)
    config = dict(n_steps=100000, batch_size=32, eval_interval=50, checkpoint_interval=100000, checkpoint_time_s=1e6, seed=0)
    trainer = Trainer(model, x, config, output_dir=str(tmp_path), resume=False, progress=False)
    timer = threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    trainer.fit()
    timer.cancel()
    assert trainer.interrupted == "SIGINT" and 0 < trainer.step < 100000
    again = Trainer(ArBG.from_data(ms.topology, x, n_bins=16, network=TINY_NETWORK), x, config, output_dir=str(tmp_path),
                    resume=True, progress=False)
    assert again.step == trainer.step


def test_a_schedule_shorter_than_its_warm_up_still_peaks_and_decays(capsys):
    """n_steps not above warmup_steps (a short run, or a short time budget): the warm-up shrinks to
    a tenth of the run, so the learning rate reaches its peak and decays, with a warning."""
    from openmm_arbg.training.trainer import Trainer, TrainingConfig

    trainer = Trainer.__new__(Trainer)  # the schedule alone
    trainer.config = TrainingConfig(n_steps=40, learning_rate=1e-3, min_lr_fraction=0.1)  # default warmup_steps 200
    trainer.progress, trainer.rank = True, 0
    assert trainer.warmup_steps() == 4
    lrs = [trainer.learning_rate(s) for s in range(40)]
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] < 0.2e-3
    trainer._warn_short_schedule()
    assert "warming up over 4 steps" in capsys.readouterr().out
    trainer.config = TrainingConfig(n_steps=400, learning_rate=1e-3)
    assert trainer.warmup_steps() == 200  # a warm-up shorter than the run is kept
