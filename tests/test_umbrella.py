"""Umbrella sampling + MBAR against the analytic torsion distribution of the harmonic chain."""

import json
import math
import os

import numpy as np
import pytest

from openmm_arbg.simulation.testsystems import harmonic_chain
from openmm_arbg.simulation.umbrella import dihedral_grid, load_umbrella, run_umbrella


def test_dihedral_grid():
    c = dihedral_grid(4, 2)
    assert c.shape == (16, 2)
    assert np.allclose(np.unique(c[:, 0]), np.radians([-135, -45, 45, 135]))
    with pytest.raises(ValueError, match="at least 2"):
        dihedral_grid(1)


@pytest.fixture(scope="module")
def chain_umbrella(tmp_path_factory):
    # barrier 2 k_torsion = 20 kJ/mol = 8 kT: plain MD of this length would hardly cross it
    ms, exact = harmonic_chain(4, k_torsion=10.0)
    out = str(tmp_path_factory.mktemp("umbrella"))
    kwargs = dict(k=100.0, n_steps=100000, report_interval=50, equilibration_steps=2000, seed=3)
    result = run_umbrella(ms, [[0, 1, 2, 3]], dihedral_grid(24, 1), out, n_workers=2, max_samples_per_window=2000, progress=False, **kwargs)
    return ms, exact, out, kwargs, result


def test_umbrella_matches_analytic_torsion_probabilities(chain_umbrella):
    _, exact, _, _, result = chain_umbrella
    for lo, hi in [(0.0, math.pi / 2), (-math.pi, -2.0), (-0.5, 0.5)]:
        p_exact = exact.probability("torsion", lo, hi)
        p, dp = result.probability(lambda v: (v[:, 0] >= lo) & (v[:, 0] < hi))
        assert 0 < dp < 0.05
        assert abs(p - p_exact) < 4 * dp, (lo, hi, p, dp, p_exact)
        # per-frame unbiased weights of all frames give the same answer
        v = np.concatenate(result.dihedrals)[:, 0]
        w = np.exp(result.log_weights())
        assert abs(w.sum() - 1) < 1e-9
        assert abs(w[(v >= lo) & (v < hi)].sum() - p) < 2 * dp
    # free energy of a region against the rest: -ln(p / (1 - p)), delta-method error
    f, df = result.free_energy(lambda v: v[:, 0] >= 0)
    p, dp = result.probability(lambda v: v[:, 0] >= 0)
    assert f == pytest.approx(-math.log(p / (1 - p)))
    assert df == pytest.approx(dp / (p * (1 - p)))


def test_umbrella_resumes_and_refuses_other_settings(chain_umbrella):
    ms, _, out, kwargs, result = chain_umbrella
    path = os.path.join(out, "window_0003.npz")
    mtime = os.path.getmtime(path)
    os.remove(os.path.join(out, "window_0005.npz"))
    with pytest.raises(FileNotFoundError, match="1 of 24 umbrella windows"):
        load_umbrella(out)
    again = run_umbrella(ms, [[0, 1, 2, 3]], dihedral_grid(24, 1), out, progress=False, **kwargs)
    assert os.path.getmtime(path) == mtime  # finished windows are not run again
    assert len(again.dihedrals) == 24 and all(len(v) == 2000 for v in again.dihedrals)
    with pytest.raises(ValueError, match="other settings \\(k, pull_k\\)"):
        run_umbrella(ms, [[0, 1, 2, 3]], dihedral_grid(24, 1), out, progress=False, **dict(kwargs, k=50.0))


def test_umbrella_cli_on_alanine_dipeptide(tmp_path):
    from openmm_arbg.cli import main

    out = str(tmp_path / "umb")
    argv = ["umbrella", "--windows", "2", "--ps", "0.5", "--report-ps", "0.05", "--equilibration-ps", "0.5", "--workers", "1",
            "--save-positions", "--export", "30", "--export-region", "phi>0", "--output", out, "--quiet"]
    assert main(argv) == 0
    with open(os.path.join(out, "result.json")) as f:
        summary = json.load(f)
    assert summary["windows"] == 4 and summary["frames"] == 40
    assert set(summary) >= {"phi>0", "beta", "alpha_R"}
    assert summary["command"].startswith("arbg umbrella --windows 2")
    assert "halves" in summary  # the equilibration check's populations (or None where MBAR cannot split 10 frames)
    assert sorted(sum(summary["overlap"]["groups"], [])) == [0, 1, 2, 3] and 0 <= summary["overlap"]["weakest"][2] <= 1
    # mdtraj and OpenMM agree on the sign of phi: each window's mean phi sits near its centre
    result = load_umbrella(out)
    for centre, v in zip(result.centres, result.dihedrals):
        d = np.angle(np.exp(1j * (v - centre)))
        assert np.all(np.abs(d.mean(axis=0)) < 0.6)
    # exported frames: Boltzmann-resampled, all with phi > 0, same stereochemistry as the input
    import mdtraj

    from openmm_arbg.analysis.observables import backbone_dihedrals
    from openmm_arbg.molecule.stereochemistry import StereoChecker
    from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum
    from openmm_arbg.molecule.topology import MolecularGraph

    ms = alanine_dipeptide_vacuum()
    frames = mdtraj.load(os.path.join(out, "frames.dcd"), top=mdtraj.Topology.from_openmm(ms.topology))
    assert frames.n_frames == 30
    assert (backbone_dihedrals(frames.xyz, ms.topology)[0] >= 0).all()
    checker = StereoChecker(MolecularGraph.from_topology(ms.topology)).record(ms.positions_nm())
    assert checker.check(np.concatenate(result.positions)).all()
    # states of the user (expressions, discovered states) get MBAR populations: phi >= 0 as an
    # expression on positions is the built-in region, and discovered states partition the frames
    from openmm_arbg.analysis.state_discovery import discover_states

    discover_states(np.concatenate(result.positions), ms.topology, n_states=2, lag=1, method="kmeans").save(tmp_path / "s.json")
    assert main(argv + ["--state", "C7ax=phi >= 0", "--states-file", str(tmp_path / "s.json")]) == 0  # the windows resume
    with open(os.path.join(out, "result.json")) as f:
        states = json.load(f)["states"]
    assert states["C7ax"]["probability"] == pytest.approx(summary["phi>0"]["probability"], rel=1e-9)
    assert sum(states[k]["probability"] for k in ("S1", "S2", "outside")) == pytest.approx(1.0, abs=1e-9)
    assert main(["umbrella", "--dihedrals", "phi", "1,2,3", "--output", str(tmp_path / "x")]) == 2
    assert main(["umbrella", "--export", "10", "--output", str(tmp_path / "y")]) == 2  # needs --save-positions
    assert main(["umbrella", "--start-from", str(tmp_path / "none.dcd"), "--output", str(tmp_path / "y")]) == 2  # no such file
    assert main(["umbrella", "--start-topology", str(tmp_path / "s.json"), "--output", str(tmp_path / "y")]) == 2  # needs --start-from
    # windows that start from frames of a run (here the exported ones): the command says so
    assert main(argv[:-3] + ["--start-from", os.path.join(out, "frames.dcd"), "--output", str(tmp_path / "z"), "--quiet"]) == 0
    assert main(["umbrella", "--state", "a=phi > 0", "--output", str(tmp_path / "y")]) == 2  # needs --save-positions
    assert main(argv[:-3] + ["--state", "a=phi7 > 0", "--output", str(tmp_path / "y"), "--quiet"]) != 0  # no such dihedral
    assert not os.path.exists(tmp_path / "y")


def test_resample_needs_positions(chain_umbrella):
    with pytest.raises(ValueError, match="save_positions=True"):
        chain_umbrella[4].resample(10)


def test_rigid_rotation_start_sets_dihedrals_and_keeps_bonds():
    import mdtraj

    from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum
    from openmm_arbg.molecule.topology import MolecularGraph
    from openmm_arbg.analysis.observables import dihedrals as compute_dihedrals
    from openmm_arbg.simulation.md import rotate_dihedrals

    ms = alanine_dipeptide_vacuum()
    x0 = np.asarray(ms.positions_nm())
    top = mdtraj.Topology.from_openmm(ms.topology)
    traj = mdtraj.Trajectory(x0[None].astype(np.float32), top)
    dihedrals = [mdtraj.compute_phi(traj)[0][0], mdtraj.compute_psi(traj)[0][0]]
    graph = MolecularGraph.from_topology(ms.topology)
    target = np.radians([30.0, -10.0])
    x = rotate_dihedrals(x0, graph.neighbors, dihedrals, target)
    assert np.allclose(compute_dihedrals(x, dihedrals)[0], target, atol=1e-6)
    bonds = np.array([[b.atom1.index, b.atom2.index] for b in ms.topology.bonds()])
    length = lambda y: np.linalg.norm(y[bonds[:, 0]] - y[bonds[:, 1]], axis=1)  # noqa: E731
    assert np.allclose(length(x), length(x0), atol=1e-9)


def _synthetic_windows(rng, drift):
    """12 windows on one dihedral, frames drawn exactly from each window's biased distribution of a
    flat profile; a fake unrestrained coordinate (positions[:, 0, 0] > 0) whose probability is 0.3
    throughout, or 0.1 in the first half of every window and 0.5 in the second (``drift``)."""
    from openmm_arbg.simulation.umbrella import UmbrellaResult
    from openmm_arbg.physics import kT_kJ_per_mol

    centres, k, n = dihedral_grid(12, 1), 20.0, 400
    sigma = math.sqrt(kT_kJ_per_mol(300.0) / k)
    dihedrals, positions = [], []
    for c in centres:
        dihedrals.append(np.angle(np.exp(1j * (c + sigma * rng.normal(size=(n, 1))))))
        p = np.r_[np.full(n // 2, 0.1), np.full(n - n // 2, 0.5)] if drift else np.full(n, 0.3)
        x = np.zeros((n, 1, 3))
        x[:, 0, 0] = np.where(rng.random(n) < p, 1.0, -1.0)
        positions.append(x)
    return UmbrellaResult(dict(centres=centres.tolist(), k=k, temperature_K=300.0), dihedrals, positions)


def test_halves_check_flags_windows_that_are_still_relaxing(capsys):
    """The umbrella command compares populations from the first and second halves of the windows:
    a coordinate the restraint leaves free that drifts (0.1 then 0.5) is flagged, a stationary one
    is not, and the restrained dihedral's region agrees in both (P(phi > 0) = 1/2 exactly)."""
    from types import SimpleNamespace

    from openmm_arbg.cli.umbrella import _halves_check

    import mdtraj

    top = mdtraj.Topology()  # the fake one-atom molecule the states read
    top.add_atom("C", mdtraj.element.carbon, top.add_residue("X", top.add_chain()))
    rng = np.random.default_rng(3)
    states = {"up": lambda x: x[:, 0, 0] > 0}
    args = SimpleNamespace(dihedrals=["phi"])
    for drift in (False, True):
        out = _halves_check(_synthetic_windows(rng, drift), args, states, top)
        text = capsys.readouterr().out
        p1, e1, p2, e2 = out["up"]
        assert ("warning: the first and second halves" in text) == drift, text
        assert ("(up " in text) == drift and "phi>0" not in text  # only the drifting state is named
        expected = (0.1, 0.5) if drift else (0.3, 0.3)
        assert abs(p1 - expected[0]) < 4 * e1 and abs(p2 - expected[1]) < 4 * e2
        q1, d1, q2, d2 = out["phi>0"]
        assert abs(q1 - 0.5) < 4 * d1 and abs(q2 - 0.5) < 4 * d2


def _windows_over_a_wall(rng, k, n_windows, wall_kT, n=400):
    """Windows on one dihedral whose frames are drawn exactly (on a 0.1 degree grid) from each
    window's biased distribution of a profile with two Gaussian walls of ``wall_kT`` at +-90 degrees,
    29 degrees wide."""
    from openmm_arbg.physics import kT_kJ_per_mol
    from openmm_arbg.simulation.umbrella import UmbrellaResult, _angular_distance

    grid = np.radians(np.arange(-1800, 1800) / 10.0)
    profile = wall_kT * (np.exp(-0.5 * (_angular_distance(grid, np.pi / 2) / 0.5) ** 2)
                         + np.exp(-0.5 * (_angular_distance(grid, -np.pi / 2) / 0.5) ** 2))
    centres = dihedral_grid(n_windows, 1)
    beta_k = k / kT_kJ_per_mol(300.0)
    dihedrals = []
    for c in centres:
        log_p = -profile - 0.5 * beta_k * _angular_distance(grid, c[0]) ** 2
        p = np.exp(log_p - log_p.max())
        dihedrals.append(rng.choice(grid, size=(n, 1), p=p / p.sum()))
    return UmbrellaResult(dict(centres=centres.tolist(), k=k, temperature_K=300.0), dihedrals)


def test_overlap_finds_windows_that_come_apart_at_a_wall(capsys):
    """Soft windows slide off a 25 kT wall, and the two sides share no frames even though every
    window is sampled exactly: overlap() finds the two groups and the command warns. Stiff, dense
    windows climb the wall and stay joined, and soft windows of a flat profile are joined."""
    from types import SimpleNamespace

    from openmm_arbg.cli.umbrella import _overlap_check

    rng = np.random.default_rng(5)
    args = SimpleNamespace(dihedrals=["phi"])
    soft = _windows_over_a_wall(rng, k=20.0, n_windows=12, wall_kT=25.0)
    o = _overlap_check(soft, args)
    text = capsys.readouterr().out
    assert len(o["groups"]) == 2 and o["weakest"][2] < 0.03 and "warning: the windows fall into 2 groups" in text, text
    sides = [set(np.abs(np.degrees(soft.centres[g, 0])) < 90) for g in o["groups"]]
    assert sides == [{True}, {False}] or sides == [{False}, {True}]  # each group is one side of the walls
    stiff = _windows_over_a_wall(rng, k=2000.0, n_windows=72, wall_kT=25.0)
    o = _overlap_check(stiff, args)
    assert len(o["groups"]) == 1 and o["weakest"][2] >= 0.03 and "warning" not in capsys.readouterr().out
    flat = _windows_over_a_wall(rng, k=20.0, n_windows=12, wall_kT=0.0)
    assert len(flat.overlap()["groups"]) == 1 and flat.overlap()["spectral_gap"] > 0.05


def test_halves_rule_reads_rare_states_in_log_odds():
    """The halves rule flags session 15's Ace-Ile-Nme alpha_L drift (0.44 +- 0.19 % then 8.4 +- 2.7 %:
    2.9 errors in probability, 5.4 in log-odds), a tenfold drift of a 0.5 % state in 2 000 frames
    per half (binomial errors) in most draws, and two halves of one stationary state in under 1 %
    of draws for rare (2 %), middling (40 %) and common (97 %) states."""
    from openmm_arbg.cli.umbrella import _halves_disagree

    assert _halves_disagree(0.0044, 0.0019, 0.084, 0.027)
    assert not _halves_disagree(0.0082, 0.0024, 0.0089, 0.0026)  # tri-alanine's alpha_L3 halves: stationary
    rng = np.random.default_rng(11)
    n = 2000

    def flagged(p_first, p_second, draws=4000):
        hits = 0
        for _ in range(draws):
            q = rng.binomial(n, [p_first, p_second]) / n
            e = np.sqrt(np.maximum(q * (1 - q), 1.0 / n) / n)
            hits += _halves_disagree(q[0], e[0], q[1], e[1])
        return hits / draws

    assert flagged(0.005, 0.05, 500) > 0.9
    for p in (0.02, 0.4, 0.97):
        assert flagged(p, p) < 0.01, p


def test_umbrella_windows_start_from_given_frames(tmp_path, monkeypatch):
    """With start_positions every window starts from one of the frames (drawn by the seed), its
    restrained dihedral rotated rigidly about the central bond (atoms 1 and 2 stay where the frame
    has them); the frames are part of the settings, so a resume with other frames is refused."""
    import openmm_arbg.simulation.umbrella as umbrella

    ms, _ = harmonic_chain(4, k_torsion=10.0)
    base = np.asarray(ms.positions_nm(), dtype=float)
    frames = np.stack([base + [i, 0.0, 0.0] for i in range(3)])  # three frames, told apart by a shift of i nm
    seen = []
    simulate = umbrella._simulate_window

    def spy(system, positions_nm, *args):
        seen.append(np.array(positions_nm))
        return simulate(system, positions_nm, *args)

    monkeypatch.setattr(umbrella, "_simulate_window", spy)
    kwargs = dict(k=100.0, n_steps=200, report_interval=50, equilibration_steps=100, seed=5, progress=False)
    out = str(tmp_path / "u")
    result = run_umbrella(ms, [[0, 1, 2, 3]], dihedral_grid(6, 1), out, start_positions=frames, **kwargs)
    picks = np.random.default_rng(5).integers(3, size=6)
    assert len(seen) == 6 and len(set(picks.tolist())) > 1
    for start, pick in zip(seen, picks):
        assert np.allclose(start[1:3], frames[pick][1:3])  # the central bond's atoms are the chosen frame's
    for start, centre in zip(seen, result.centres):  # and the restrained dihedral is the window's centre
        assert abs(np.angle(np.exp(1j * (umbrella.compute_dihedrals(start[None], [[0, 1, 2, 3]])[0, 0] - centre[0])))) < 1e-6
    with open(os.path.join(out, "settings.json")) as f:
        assert "start_frames_sha256" in json.load(f)
    with pytest.raises(ValueError, match="start_frames_sha256"):
        run_umbrella(ms, [[0, 1, 2, 3]], dihedral_grid(6, 1), out, start_positions=frames[::-1], **kwargs)
    with pytest.raises(ValueError, match="start_positions must be"):
        run_umbrella(ms, [[0, 1, 2, 3]], dihedral_grid(6, 1), str(tmp_path / "v"), start_positions=frames[:, :2], **kwargs)
