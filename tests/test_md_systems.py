"""Training-data MD resumes after an interruption; systems are unconstrained and as documented."""

import json

import numpy as np
import openmm
import pytest

from openmm_arbg.simulation import md as md_module
from openmm_arbg.simulation.md import load_md, run_md
from openmm_arbg.physics import check_shape_move_compatible
from openmm_arbg.simulation.systems import alanine_dipeptide_implicit
from openmm_arbg.simulation.testsystems import harmonic_chain


def test_interrupted_md_resumes_and_completes(tmp_path, monkeypatch):
    ms, _ = harmonic_chain(4)
    calls = {"n": 0}
    real_save = np.save

    def flaky_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(md_module.np, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        run_md(ms, str(tmp_path), n_steps=5000, report_interval=10, chunk_frames=100, equilibration_steps=100, progress=False)
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["completed_chunks"] == 2 and not settings["complete"]
    monkeypatch.setattr(md_module.np, "save", real_save)
    traj = run_md(ms, str(tmp_path), n_steps=5000, report_interval=10, chunk_frames=100, equilibration_steps=100, progress=False)
    assert traj.n_frames == 500 and np.isfinite(traj.xyz).all()
    assert json.loads((tmp_path / "settings.json").read_text())["complete"]
    assert load_md(str(tmp_path)).n_frames == 500
    # the same folder with other settings is refused rather than mixed
    with pytest.raises(ValueError, match="other settings"):
        run_md(ms, str(tmp_path), n_steps=6000, report_interval=10, chunk_frames=100, equilibration_steps=100, progress=False)


def test_implicit_solvent_alanine_dipeptide():
    ms = alanine_dipeptide_implicit()
    assert ms.system.getNumConstraints() == 0
    assert any(isinstance(f, (openmm.GBSAOBCForce, openmm.CustomGBForce)) for f in ms.system.getForces())
    check_shape_move_compatible(ms.system)


def test_constrained_md_is_refused(alanine):
    import copy

    from openmm_arbg.simulation.systems import MolecularSystem

    system = copy.deepcopy(alanine.system)
    system.addConstraint(0, 1, 0.109)
    bad = MolecularSystem("x", system, alanine.topology, alanine.positions, alanine.temperature)
    with pytest.raises(ValueError, match="unconstrained"):
        run_md(bad, "unused", n_steps=10, report_interval=10)


def test_md_never_overwrites_files_it_did_not_write(tmp_path, capsys):
    ms, _ = harmonic_chain(4)
    kwargs = dict(n_steps=400, report_interval=10, chunk_frames=10, equilibration_steps=10, progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "trajectory.dcd").write_bytes(b"the user's own trajectory")
    with pytest.raises(ValueError, match="not written by it"):
        run_md(ms, str(mine), **kwargs)
    assert (mine / "trajectory.dcd").read_bytes() == b"the user's own trajectory" and not (mine / "settings.json").exists()

    out = tmp_path / "run"
    first = run_md(ms, str(out), **kwargs)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["complete"] and len(settings["trajectory_sha256"]) == 64
    # a trajectory.dcd replaced after the run is not the one recorded: refused, untouched
    original = (out / "trajectory.dcd").read_bytes()
    (out / "trajectory.dcd").write_bytes(b"replaced")
    with pytest.raises(ValueError, match="not written by this run"):
        run_md(ms, str(out), **kwargs)
    assert (out / "trajectory.dcd").read_bytes() == b"replaced"
    (out / "trajectory.dcd").write_bytes(original)
    assert np.allclose(run_md(ms, str(out), **kwargs).xyz, first.xyz, atol=1e-6)  # the recorded file, read back (DCD is in A)

    # deleted after completion: runs again from the start (same seed, uninterrupted: the same frames)
    (out / "trajectory.dcd").unlink()
    capsys.readouterr()
    again = run_md(ms, str(out), **kwargs)
    assert "was deleted: running it again from the start" in capsys.readouterr().out
    assert np.array_equal(again.xyz, first.xyz)
    assert json.loads((out / "settings.json").read_text())["complete"]


def test_md_with_missing_chunks_restarts(tmp_path, monkeypatch, capsys):
    ms, _ = harmonic_chain(4)
    kwargs = dict(n_steps=400, report_interval=10, chunk_frames=10, equilibration_steps=10, progress=False)
    calls = {"n": 0}
    real_save = np.save

    def flaky_save(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kw)

    monkeypatch.setattr(md_module.np, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        run_md(ms, str(tmp_path), **kwargs)
    monkeypatch.setattr(md_module.np, "save", real_save)
    (tmp_path / "chunks" / "chunk_000001.npy").unlink()  # the user tidied up
    traj = run_md(ms, str(tmp_path), **kwargs)
    assert "running again from the start" in capsys.readouterr().out and traj.n_frames == 40
