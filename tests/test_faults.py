"""Fault injection: ``arbg`` commands killed with SIGKILL (no chance to clean up) at points chosen
by a seeded generator, then run again with the same command.

Checked each time: (i) every file the command left loads, (ii) the resumed result equals an
uninterrupted run's where the command guarantees it (``arbg mcmc``: the same chain for the same
seed; ``arbg train``: bit-for-bit resumable checkpoints), and is complete and consistent
otherwise (``arbg md``: new random numbers after a resume), (iii) at most the unit of work in
progress was lost (a chunk, a window, the steps since the last checkpoint), and (iv) no
third-party banner (pymbar's JAX notice) reaches the output.

The default cases take about a minute on one core; ``pytest -m slow tests/test_faults.py`` kills
at more points and also covers ``arbg sample``. docs/reliability.md tabulates the cases.
"""

import csv
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

BANNERS = ("JAX NOT FOUND", "Warning on use of the timeseries module")
CLI = "import sys; from openmm_arbg.cli import main; sys.exit(main())"


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _run(args, cwd):
    """Run ``arbg args`` to the end; returns (returncode, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-c", CLI, *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    for banner in BANNERS:
        assert banner not in p.stdout + p.stderr, f"a third-party banner reached the output of arbg {args[0]}"
    return p.returncode, p.stdout, p.stderr


def _kill_when(args, cwd, ready, delay_s, timeout_s=300):
    """Start ``arbg args``, wait until ``ready()`` is true, then ``delay_s`` seconds more, and
    SIGKILL it. Returns ``ready()``'s last value (e.g. what was saved just before the kill), or
    None if the command ended first."""
    p = subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    try:
        while not ready():
            if p.poll() is not None:
                return None
            if time.time() - t0 > timeout_s:
                raise AssertionError(f"arbg {args[0]} never got ready")
            time.sleep(0.05)
        time.sleep(delay_s)
        if p.poll() is not None:
            return None
        state = ready()
        p.send_signal(signal.SIGKILL)
        return state
    finally:
        p.kill()
        p.communicate()


def _loads_everything(folder, killed=False):
    """(i): every file under ``folder`` that a command writes can be read back.

    Right after a SIGKILL (``killed``) a temporary file of a write in progress may remain: nothing
    can remove it, and nothing reads it. Once a command has ended (resumed or not) none may remain.
    """
    import mdtraj
    import openmm

    from openmm_arbg.model.checkpoint import read_checkpoint

    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if os.path.isdir(path):
            continue
        name = os.path.basename(path)
        if ".tmp" in name:
            assert killed, f"a temporary file was left behind: {path}"
            continue
        if name.endswith(".json"):
            json.load(open(path))
        elif name.endswith(".npy"):
            np.load(path)
        elif name.endswith(".npz"):
            with np.load(path) as z:
                [z[k] for k in z.files]
        elif name.endswith(".safetensors"):
            read_checkpoint(path)
        elif name.endswith(".xml"):
            openmm.XmlSerializer.deserialize(open(path).read())
        elif name.endswith(".csv"):
            list(csv.DictReader(open(path)))
        elif name.endswith(".pdb"):
            mdtraj.load(path)


def test_atomic_write_removes_what_a_killed_write_left(tmp_path):
    """A SIGKILL between creating the temporary file and renaming it leaves the temporary file;
    the next write of the same file removes it, and leaves other files' temporaries alone."""
    from openmm_arbg.utils import atomic_write

    left = tmp_path / "state.xml.eilxrbd5.tmp.xml"
    other = tmp_path / "other.xml.abcdefgh.tmp.xml"
    left.write_text("half")
    other.write_text("in progress")
    with atomic_write(tmp_path / "state.xml") as f:
        f.write("<a/>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.xml.abcdefgh.tmp.xml", "state.xml"]
    assert (tmp_path / "state.xml").read_text() == "<a/>"


def _chunks(folder):
    """The chunk files a run has committed (a write in progress is a temporary file, not counted)."""
    return sorted(p for p in glob.glob(os.path.join(folder, "chunk_*")) if ".tmp" not in os.path.basename(p))


# ---------------------------------------------------------------------------------------- mcmc
def _mcmc_args(output, iterations=40):
    from openmm_arbg.pretrained import pretrained_path

    return ["mcmc", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--iterations", iterations, "--attempts", "5",
            "--langevin-steps", "5", "--chunk-iterations", "10", "--platform", "Reference", "--seed", "7", "--output", output, "--quiet"]


def _trajectory(path):
    import mdtraj

    from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum

    return mdtraj.load(path, top=mdtraj.Topology.from_openmm(alanine_dipeptide_vacuum().topology))


def _mcmc_killed_and_resumed(tmp_path, kill_delays):
    ref = tmp_path / "ref.dcd"
    assert _run(_mcmc_args(ref), tmp_path)[0] == 0
    out = tmp_path / "chain.dcd"
    progress = tmp_path / "chain.dcd.progress"
    saved = None
    for delay in kill_delays:
        first = len(_chunks(progress))
        state = _kill_when(_mcmc_args(out), tmp_path, lambda: len(_chunks(progress)) > first and len(_chunks(progress)), delay)
        _loads_everything(str(progress), killed=True)
        assert state is not None or saved is not None, "the first kill came too late"
        if state is None:
            break
        saved = state
    code, text, _ = _run(_mcmc_args(out), tmp_path)
    assert code == 0
    if saved is not None and "resuming" in text:
        done = int(re.search(r"resuming .*: (\d+) of 40", text).group(1))
        assert done >= 10 * saved  # (iii) at most the chunk in progress was lost
    a, b = _trajectory(ref), _trajectory(out)
    assert a.n_frames == b.n_frames == 40 and np.array_equal(a.xyz, b.xyz)  # (ii) the same chain
    assert _chunks(progress) == [] and json.loads((progress / "progress.json").read_text())["complete"]
    _loads_everything(str(tmp_path))


def test_mcmc_killed_resumes_to_the_same_chain(tmp_path):
    _mcmc_killed_and_resumed(tmp_path, [float(np.random.default_rng(1).uniform(0, 0.5))])


@pytest.mark.slow
def test_mcmc_killed_three_times(tmp_path):
    _mcmc_killed_and_resumed(tmp_path, list(np.random.default_rng(2).uniform(0, 1.0, 3)))


def test_mcmc_and_sample_outputs_checked_before_computing(tmp_path, capsys):
    from openmm_arbg.cli import main
    from openmm_arbg.pretrained import pretrained_path

    (tmp_path / "mine.dcd").write_bytes(b"not ours")
    sample = ["sample", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--n", "10", "--output"]
    for args in (_mcmc_args(tmp_path / "mine.dcd"), sample + [str(tmp_path / "mine.dcd")]):
        assert main(args) == 2
        assert "never overwritten" in capsys.readouterr().err and (tmp_path / "mine.dcd").read_bytes() == b"not ours"
    for args in (_mcmc_args(tmp_path), sample + [str(tmp_path)]):
        assert main(args) == 2 and "is a folder" in capsys.readouterr().err
    for args in (_mcmc_args(tmp_path / "chain.txt"), sample + [str(tmp_path / "s.txt")]):
        assert main(args) == 2 and "unknown file type" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(sample + [str(tmp_path / "file" / "s.dcd")]) == 2 and "cannot create the folder" in capsys.readouterr().err
    # a finished run's output is its own: the same command again reports it, other settings are refused by name
    out = tmp_path / "s.dcd"
    assert main(sample + [str(out), "--seed", "1", "--no-weights"]) == 0
    assert main(sample + [str(out), "--seed", "1", "--no-weights"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(sample + [str(out), "--seed", "2", "--no-weights"]) == 2
    assert "other settings (seed): seed was 1, now 2" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- md
def _md_args(output):
    return ["md", "--system", "alanine_dipeptide_vacuum", "--ns", "0.02", "--report-ps", "0.1", "--equilibration-ps", "0.2",
            "--chunk-frames", "20", "--platform", "Reference", "--output", output, "--quiet"]


@pytest.fixture(scope="module")
def md_run(tmp_path_factory):
    """An MD run killed once after its second chunk, then resumed: (folder, frames saved at the kill, stdout of the resume)."""
    tmp = tmp_path_factory.mktemp("md")
    settings = tmp / "md" / "300K" / "settings.json"

    def recorded():
        """Chunks that settings.json records as done: a chunk file renamed into place just before
        the kill, whose state.xml and record were not yet written, is the chunk in progress."""
        return json.loads(settings.read_text())["completed_chunks"] if settings.exists() else 0

    delay = float(np.random.default_rng(3).uniform(0, 0.3))
    saved = _kill_when(_md_args(tmp / "md"), tmp, lambda: recorded() >= 2 and recorded(), delay)
    assert saved is not None, "the kill came too late"
    _loads_everything(str(tmp / "md"), killed=True)
    code, text, _ = _run(_md_args(tmp / "md"), tmp)
    assert code == 0
    return tmp / "md" / "300K", saved, text


def test_md_killed_resumes_complete_and_consistent(md_run):
    import mdtraj

    folder, saved, text = md_run
    traj = mdtraj.load(str(folder / "trajectory.dcd"), top=str(folder / "topology.pdb"))
    assert traj.n_frames == 200 and np.isfinite(traj.xyz).all()
    bonds = np.linalg.norm(traj.xyz[:, 0] - traj.xyz[:, 1], axis=-1)
    assert (bonds > 0.05).all() and (bonds < 0.2).all()  # a physical molecule in every frame, resumed part included
    if saved:
        done = int(re.search(r"resuming .*: (\d+) of 200 frames", text).group(1))
        assert done >= 20 * saved  # (iii)
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["complete"] and settings["completed_chunks"] == 10 and _chunks(str(folder / "chunks")) == []
    _loads_everything(str(folder))


# ---------------------------------------------------------------------------------------- train
def _train_args(md_folder, output, n_steps=300):
    return ["train", "--trajectories", md_folder / "trajectory.dcd", "--topology", md_folder / "topology.pdb", "--output", output,
            "--n-steps", n_steps, "--batch-size", "32", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--eval-interval", "50",
            "--checkpoint-interval", "50", "--warmup-steps", "10", "--threads", "1", "--quiet"]


def _train_killed_and_resumed(md_run, tmp_path, kill_delays, compare):
    from openmm_arbg import ArBG

    folder = md_run[0]
    out = tmp_path / "model"
    checkpoint = out / "checkpoint.safetensors"
    for i, delay in enumerate(kill_delays):
        before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
        killed = _kill_when(_train_args(folder, out), tmp_path,
                            lambda: checkpoint.exists() and checkpoint.stat().st_mtime_ns != before, delay)
        assert killed or i > 0, "the first kill came too late"
        _loads_everything(str(out), killed=True)
    code, text, _ = _run(_train_args(folder, out), tmp_path)
    assert code == 0
    rows = list(csv.DictReader(open(out / "training_log.csv")))
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 300  # one row per evaluation, none twice, none lost
    model = ArBG.load(str(out / "model.safetensors"))
    x, log_q = model.sample(5, seed=0)
    assert np.isfinite(log_q).all()
    _loads_everything(str(out))
    if compare:  # (ii) checkpoints resume bit for bit: the same model as an uninterrupted run
        assert _run(_train_args(folder, tmp_path / "ref"), tmp_path)[0] == 0
        ref = ArBG.load(str(tmp_path / "ref" / "model.safetensors"))
        for (k, a), (_, b) in zip(sorted(model.network.state_dict().items()), sorted(ref.network.state_dict().items())):
            assert np.array_equal(a.numpy(), b.numpy()), k


def test_train_killed_resumes(md_run, tmp_path):
    _train_killed_and_resumed(md_run, tmp_path, [float(np.random.default_rng(4).uniform(0, 0.5))], compare=False)


@pytest.mark.slow
def test_train_killed_twice_equals_uninterrupted(md_run, tmp_path):
    _train_killed_and_resumed(md_run, tmp_path, list(np.random.default_rng(5).uniform(0, 1.0, 2)), compare=True)


# ---------------------------------------------------------------------------------------- umbrella
def _umbrella_args(output):
    return ["umbrella", "--windows", "2", "--ps", "0.5", "--report-ps", "0.05", "--equilibration-ps", "0.2", "--workers", "1",
            "--platform", "Reference", "--output", output, "--quiet"]


def _umbrella_killed_and_resumed(tmp_path, kill_delays):
    out = tmp_path / "umb"
    windows = lambda: [p for p in sorted(glob.glob(str(out / "window_*.npz"))) if ".tmp" not in os.path.basename(p)]  # noqa: E731
    for delay in kill_delays:
        first = len(windows())
        saved = _kill_when(_umbrella_args(out), tmp_path, lambda: len(windows()) > first and len(windows()), delay)
        _loads_everything(str(out), killed=True)
        assert saved is not None or first > 0, "the first kill came too late"
        if saved is None:
            break
        assert len(windows()) >= saved  # (iii) finished windows stay
    code, text, _ = _run(_umbrella_args(out), tmp_path)
    assert code == 0 and "MBAR over 4 windows" in text
    summary = json.loads((out / "result.json").read_text())
    assert summary["windows"] == 4 and 0 < summary["phi>0"]["probability"] < 1
    _loads_everything(str(out))


def test_umbrella_killed_resumes(tmp_path):
    _umbrella_killed_and_resumed(tmp_path, [float(np.random.default_rng(6).uniform(0, 0.3))])


@pytest.mark.slow
def test_umbrella_killed_at_every_window(tmp_path):
    _umbrella_killed_and_resumed(tmp_path, list(np.random.default_rng(7).uniform(0, 0.3, 3)))


# ---------------------------------------------------------------------------------------- metadynamics
def test_metadynamics_killed_resumes(tmp_path):
    """Killed in the build or the production phase, the same command finishes from the saved
    chunks: finished chunks stay, and the result has every frame."""
    out = tmp_path / "meta"
    args = ["metadynamics", "--build-ps", "20", "--ps", "40", "--report-ps", "0.1", "--deposit-ps", "0.1", "--chunks", "4",
            "--platform", "Reference", "--output", out, "--quiet"]
    chunks = lambda: [p for p in sorted(glob.glob(str(out / "*_0*.npz"))) if ".tmp" not in os.path.basename(p)]  # noqa: E731
    kills = 0
    for phase_files in (1, 5):  # a kill in the build phase, then one in production
        saved = _kill_when(args, tmp_path, lambda: len(chunks()) >= phase_files and len(chunks()),
                           float(np.random.default_rng(phase_files).uniform(0, 0.2)))
        _loads_everything(str(out), killed=True)
        if saved is None:
            break
        kills += 1
        assert len(chunks()) >= saved  # finished chunks stay
    assert kills, "the first kill came too late"
    code, text, _ = _run(args, tmp_path)
    assert code == 0 and "400 frames" in text
    summary = json.loads((out / "result.json").read_text())
    assert summary["frames"] == 400 and 0 < summary["beta"]["probability"] <= 1
    _loads_everything(str(out))


# ---------------------------------------------------------------------------------------- sample
@pytest.mark.slow
def test_sample_killed_resumes_to_the_same_samples(tmp_path):
    from openmm_arbg.pretrained import pretrained_path

    def args(output):
        return ["sample", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--n", "3000", "--chunk-size", "500", "--seed", "3",
                "--resample", "--output", output, "--quiet"]

    assert _run(args(tmp_path / "ref.dcd"), tmp_path)[0] == 0
    progress = tmp_path / "s.dcd.progress"
    rng = np.random.default_rng(8)
    for _ in range(2):
        first = len(_chunks(progress))
        _kill_when(args(tmp_path / "s.dcd"), tmp_path, lambda: len(_chunks(progress)) > first, float(rng.uniform(0, 1)))
        _loads_everything(str(progress), killed=True)
    assert _run(args(tmp_path / "s.dcd"), tmp_path)[0] == 0
    assert np.array_equal(_trajectory(tmp_path / "ref.dcd").xyz, _trajectory(tmp_path / "s.dcd").xyz)
    a, b = np.load(tmp_path / "ref.dcd.progress" / "result.npz"), np.load(progress / "result.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
