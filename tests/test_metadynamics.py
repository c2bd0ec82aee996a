"""Metadynamics then MD under the frozen bias, reweighted, against the analytic torsion
distribution of the harmonic chain; resuming; hydrogen mass repartitioning; the command line."""

import json
import math
import os

import numpy as np
import pytest

from openmm_arbg.simulation.metadynamics import load_metadynamics, run_metadynamics
from openmm_arbg.simulation.testsystems import harmonic_chain

# barrier 2 k_torsion = 20 kJ/mol = 8 kT: plain MD of this length would hardly cross it
KWARGS = dict(n_steps=200000, build_steps=40000, report_interval=50, deposit_interval=200, height=1.5, width_deg=25.0,
              n_chunks=4, equilibration_steps=1000, seed=3, platform="Reference")


@pytest.fixture(scope="module")
def chain_metad(tmp_path_factory):
    ms, exact = harmonic_chain(4, k_torsion=10.0)
    out = str(tmp_path_factory.mktemp("metad"))
    result = run_metadynamics(ms, [[0, 1, 2, 3]], out, progress=False, **KWARGS)
    return ms, exact, out, result


def test_metadynamics_matches_analytic_torsion_probabilities(chain_metad):
    _, exact, _, result = chain_metad
    assert result.bias_grid.max() - result.bias_grid.min() > 10.0  # kJ/mol: the bias filled most of the 20 kJ/mol wells
    assert len(result.bias) == 4000 and np.isfinite(result.bias).all()
    for lo, hi in [(0.0, math.pi / 2), (-math.pi, -2.0), (-0.5, 0.5), (2.0, math.pi)]:
        p_exact = exact.probability("torsion", lo, hi)
        p, dp = result.probability(lambda v: (v[:, 0] >= lo) & (v[:, 0] < hi))
        assert 0 < dp < 0.05
        assert abs(p - p_exact) < 4 * dp, (lo, hi, p, dp, p_exact)
    # without the weights the frames are far from Boltzmann: the barrier top (|phi| < 0.5) is oversampled
    v = result.dihedrals[:, 0]
    top = (v >= -0.5) & (v < 0.5)
    assert top.mean() > 3 * exact.probability("torsion", -0.5, 0.5)
    w = np.exp(result.log_weights())
    assert abs(w.sum() - 1) < 1e-9 and 0 < result.effective_fraction() < 1
    # the halves agree
    first, second = result.halves()
    pa, ea = first.probability(lambda v: v[:, 0] > 0)
    pb, eb = second.probability(lambda v: v[:, 0] > 0)
    assert abs(pa - pb) < 4 * math.hypot(ea, eb)


def test_metadynamics_error_is_calibrated_by_repeats(tmp_path):
    """The reported standard error matches the scatter of independent runs about the exact value: the
    root mean square of 8 z-scores lies in [0.41, 1.66] with 99 % probability (chi-square of 8
    degrees of freedom). Without pymbar's correlation correction the ratio is about 3."""
    ms, exact = harmonic_chain(4, k_torsion=10.0)
    lo, hi = 0.0, 2.0
    p_exact = exact.probability("torsion", lo, hi)
    z = []
    for seed in range(8):
        r = run_metadynamics(ms, [[0, 1, 2, 3]], str(tmp_path / f"s{seed}"), progress=False,
                             **dict(KWARGS, n_steps=40000, seed=100 + seed))
        p, dp = r.probability(lambda v: (v[:, 0] >= lo) & (v[:, 0] < hi))
        z.append((p - p_exact) / dp)
    ratio = float(np.sqrt(np.mean(np.square(z))))
    assert 0.4 < ratio < 1.7, (ratio, z)


def test_two_dihedrals_reweight_to_the_product_of_marginals(tmp_path):
    ms, exact = harmonic_chain(5, k_torsion=6.0)
    r = run_metadynamics(ms, [[0, 1, 2, 3], [1, 2, 3, 4]], str(tmp_path / "m2"), progress=False,
                         **dict(KWARGS, grid_width=36, n_steps=200000))
    assert r.bias_grid.shape == (36, 36)
    p1 = exact.probability("torsion", 0.0, math.pi)
    p, dp = r.probability(lambda v: (v[:, 0] > 0) & (v[:, 1] > 0))  # the torsions are independent
    assert abs(p - p1 * p1) < 4 * dp, (p, dp, p1 * p1)


def test_metadynamics_resumes_and_refuses_other_settings(chain_metad):
    ms, _, out, result = chain_metad
    kept = os.path.join(out, "production_0001.npz")
    mtime = os.path.getmtime(kept)
    os.remove(os.path.join(out, "production_0003.npz"))
    with pytest.raises(FileNotFoundError, match="3 of 4 production chunks"):
        load_metadynamics(out)
    again = run_metadynamics(ms, [[0, 1, 2, 3]], out, progress=False, **KWARGS)
    assert os.path.getmtime(kept) == mtime  # finished chunks are not run again
    assert np.array_equal(again.bias[:3000], result.bias[:3000]) and len(again.bias) == 4000
    with pytest.raises(ValueError, match="bias_factor"):
        run_metadynamics(ms, [[0, 1, 2, 3]], out, progress=False, **dict(KWARGS, bias_factor=4.0))


def test_a_build_interrupted_resumes_from_its_saved_bias(tmp_path):
    """The bias of the finished build chunks is loaded again: a run interrupted after the second
    of four build chunks ends with a bias as large as an uninterrupted run's (the bias grows
    with every chunk; a restart from zero would leave it smaller)."""
    ms, _ = harmonic_chain(4, k_torsion=10.0)
    out = str(tmp_path / "m")
    settings = dict(KWARGS, n_steps=8000)
    run_metadynamics(ms, [[0, 1, 2, 3]], out, progress=False, **settings)
    with np.load(os.path.join(out, "build_0001.npz")) as data:
        half = np.array(data["bias"])
    full = load_metadynamics(out).bias_grid
    for name in os.listdir(out):
        if name.startswith("production") or name in ("build_0002.npz", "build_0003.npz"):
            os.remove(os.path.join(out, name))
    resumed = run_metadynamics(ms, [[0, 1, 2, 3]], out, progress=False, **settings).bias_grid
    assert resumed.sum() > 1.3 * half.sum()
    assert 0.7 < resumed.sum() / full.sum() < 1.4


@pytest.mark.parametrize("change, message", [
    (dict(bias_factor=1.0), "bias_factor must be a number > 1"),
    (dict(build_steps=1000), "build_steps \\(1000\\) must be a multiple"),
    (dict(n_steps=1234), "n_steps \\(1234\\) must be a multiple"),
    (dict(hydrogen_mass=9.0), "between 1 and 5 Da"),
    (dict(grid_width=4), "at least 8"),
])
def test_metadynamics_refuses_bad_settings(tmp_path, change, message):
    ms, _ = harmonic_chain(4)
    with pytest.raises(ValueError, match=message):
        run_metadynamics(ms, [[0, 1, 2, 3]], str(tmp_path / "x"), progress=False, **dict(KWARGS, **change))
    with pytest.raises(ValueError, match="1 to 3 dihedrals"):
        run_metadynamics(ms, [[0, 1, 2, 3]] * 4, str(tmp_path / "y"), progress=False, **KWARGS)


def test_repartition_hydrogen_mass_keeps_the_molecule_and_its_mass():
    from openmm_arbg.molecule.topology import MolecularGraph
    from openmm_arbg.physics import check_system_matches_molecule, repartition_hydrogen_mass
    from openmm_arbg.simulation.systems import build_system

    for name in ("alanine_dipeptide_vacuum", "peptide:TPG"):
        ms = build_system(name)
        graph = MolecularGraph.from_topology(ms.topology)
        masses = lambda s: np.array([s.getParticleMass(i)._value for i in range(s.getNumParticles())])  # noqa: E731
        before = masses(ms.system)
        repartition_hydrogen_mass(ms.system, graph, 3.0)
        after = masses(ms.system)
        hydrogens = np.array([e == "H" for e in graph.elements])
        assert np.allclose(after[hydrogens], 3.0) and after.sum() == pytest.approx(before.sum())
        assert (after[~hydrogens] < before[~hydrogens] + 1e-9).all()
        check_system_matches_molecule(ms.system, graph)  # a repartitioned System is still the molecule
    with pytest.raises(ValueError, match="would leave"):
        repartition_hydrogen_mass(build_system("alanine_dipeptide_vacuum").system, graph, 5.0)


def test_metadynamics_cli_on_two_molecules(tmp_path):
    from openmm_arbg.cli import main

    for system, dihedrals, state in (("alanine_dipeptide_vacuum", ["phi", "psi"], "aR=phi < 0 and -120 <= psi <= 50"),
                                     ("peptide:V", ["psi2", "chi1_2"], "chi1t2=abs(chi1_2) > 120")):
        out = str(tmp_path / system.replace(":", "_"))
        argv = ["metadynamics", "--system", system, "--dihedrals", *dihedrals, "--build-ps", "2", "--ps", "4", "--report-ps", "0.1",
                "--deposit-ps", "0.1", "--chunks", "2", "--timestep-fs", "2", "--hydrogen-mass", "3", "--state", state,
                "--output", out, "--quiet"]
        assert main(argv) == 0
        with open(os.path.join(out, "result.json")) as f:
            summary = json.load(f)
        assert summary["frames"] == 40 and summary["production_ps"] == 4 and summary["build_ps"] == 2
        assert summary["command"].startswith("arbg metadynamics --system")
        name = state.split("=")[0]
        assert 0 <= summary["states"][name]["probability"] <= 1 and summary["states"][name]["frames"] <= 40
        assert set(summary["halves"]) >= {name}
    # a second seed of the first molecule, pooled with the first run: states and regions, per run and pooled
    first = str(tmp_path / "alanine_dipeptide_vacuum")
    argv = ["metadynamics", "--build-ps", "2", "--ps", "4", "--report-ps", "0.1", "--deposit-ps", "0.1", "--chunks", "2",
            "--timestep-fs", "2", "--hydrogen-mass", "3", "--state", "aR=phi < 0 and -120 <= psi <= 50", "--seed", "5",
            "--output", str(tmp_path / "second"), "--pool", first, "--quiet"]
    assert main(argv) == 0
    with open(tmp_path / "second" / "result.json") as f:
        pooled = json.load(f)["pooled"]
    assert set(pooled) >= {"aR", "phi>0", "beta"} and len(pooled["aR"]["runs"]) == 2
    assert pooled["aR"]["probability"] == pytest.approx(np.mean(pooled["aR"]["runs"]))
    assert main(argv[:-3] + ["--pool", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert main(["metadynamics", "--dihedrals", "phi", "psi", "phi2", "psi2", "--output", str(tmp_path / "z")]) == 2
    assert main(["metadynamics", "--ps", "1", "--report-ps", "0.3", "--output", str(tmp_path / "z")]) == 2


def test_a_run_resumes_on_the_platform_it_started_on(tmp_path):
    """With ``platform=None`` a resumed run takes the stored platform, not a new speed test's
    choice (which for a 4-atom chain would be Reference, refused as another setting)."""
    ms, _ = harmonic_chain(4)
    out = str(tmp_path / "m")
    settings = dict(KWARGS, n_steps=8000, platform="CPU")
    run_metadynamics(ms, [[0, 1, 2, 3]], out, progress=False, **settings)
    os.remove(os.path.join(out, "production_0003.npz"))
    again = run_metadynamics(ms, [[0, 1, 2, 3]], out, progress=False, **dict(settings, platform=None))
    assert again.settings["platform"] == "CPU" and len(again.bias) == 160


def _synthetic_run(fraction, n=4000, seed=0, settings=None):
    """A MetadynamicsResult with no bias (equal weights) whose first dihedral is positive in about
    ``fraction`` of independent frames."""
    from openmm_arbg.simulation.metadynamics import MetadynamicsResult

    rng = np.random.default_rng(seed)
    values = np.where(rng.random(n) < fraction, 1.0, -1.0)[:, None]
    settings = settings or dict(system_sha256="x", temperature_K=300.0, dihedrals=[[0, 1, 2, 3]])
    return MetadynamicsResult(settings, values, np.zeros(n), np.zeros((n, 4, 3), dtype=np.float32), np.zeros((8,)))


def test_pool_runs_uses_the_scatter_when_runs_disagree():
    from openmm_arbg.simulation.metadynamics import pool_runs

    agreeing = [_synthetic_run(0.3, seed=s) for s in range(6)]
    pooled = pool_runs(agreeing, ["phi"])["phi>0"]
    p_each = [r.probability(lambda v: v[:, 0] > 0) for r in agreeing]
    assert pooled["probability"] == pytest.approx(np.mean([p for p, _ in p_each]))
    assert pooled["runs"] == pytest.approx([p for p, _ in p_each]) and 0.1 < pooled["dispersion"] < 3.5
    assert pooled["probability_error"] == pytest.approx(max(np.sqrt(sum(e**2 for _, e in p_each)) / 6,
                                                            np.std([p for p, _ in p_each], ddof=1) / np.sqrt(6)))
    assert abs(pooled["probability"] - 0.3) < 4 * pooled["probability_error"]
    # runs of different true populations: the scatter, not the runs' own errors, sets the pooled error
    disagreeing = [_synthetic_run(f, seed=s) for s, f in enumerate([0.2, 0.4, 0.25, 0.35])]
    pooled = pool_runs(disagreeing, ["phi"])["phi>0"]
    own = np.sqrt(sum(r.probability(lambda v: v[:, 0] > 0)[1] ** 2 for r in disagreeing)) / 4
    assert pooled["dispersion"] > 20 and pooled["probability_error"] > 4 * own
    # runs of other settings are refused
    other = _synthetic_run(0.3, settings=dict(system_sha256="x", temperature_K=310.0, dihedrals=[[0, 1, 2, 3]]))
    with pytest.raises(ValueError, match="differ in temperature_K"):
        pool_runs([agreeing[0], other], ["phi"])


def test_docstring_example_runs():
    import doctest

    from openmm_arbg.simulation import metadynamics

    assert doctest.testmod(metadynamics).failed == 0
