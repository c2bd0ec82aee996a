"""Sequential Monte Carlo over partial structures is exact: on the analytic chain, its log Z and
an asymmetric torsion observable agree with the exact values within errors from independent
repeats (after resampling particles are dependent, so the spread of repeats is the error)."""

import numpy as np
import pytest

from openmm_arbg.analysis.observables import dihedrals
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.sampling.smc import partial_system, placed_atoms, smc_sample

from conftest import chain_with_untrained_model


@pytest.fixture(scope="module")
def chain5(tmp_path_factory):
    return chain_with_untrained_model(5, tmp_path_factory.mktemp("chain5_md"))


def test_placed_atoms_follow_the_model_order(chain5):
    _, _, model = chain5
    counts = [int(placed_atoms(model.representation, c).sum()) for c in range(model.n_coords + 1)]
    assert counts[0] == 1 and counts[-1] == model.n_atoms and counts == sorted(counts)


def _check_against_the_chain(chain5, run, repeats=12):
    """Run ``run(u, seed)`` ``repeats`` times: its log Z and P(0 <= torsion < 2) against the exact
    values within 4.5 standard errors of the repeats. Returns the last result."""
    ms, analytic, _ = chain5
    log_z, p = [], []
    with ReducedPotential(ms.system, temperature=300.0) as u:
        for r in range(repeats):
            result = run(u, r)
            log_z.append(result.log_z)
            phi = dihedrals(result.positions, [[0, 1, 2, 3], [1, 2, 3, 4]])
            p.append(result.expectation(((phi >= 0) & (phi < 2.0)).mean(axis=1)))
    exact_log_z, exact_p = analytic.log_partition_function(300.0), analytic.probability("torsion", 0.0, 2.0)
    se_z = np.std(log_z, ddof=1) / np.sqrt(len(log_z))
    assert abs(np.mean(log_z) - exact_log_z) < 4.5 * se_z + 0.02, (np.mean(log_z), exact_log_z, se_z)
    se_p = np.std(p, ddof=1) / np.sqrt(len(p))
    assert abs(np.mean(p) - exact_p) < 4.5 * se_p, (np.mean(p), exact_p, se_p)
    return result


def test_log_z_and_an_observable_match_the_analytic_chain(chain5):
    model = chain5[2]
    result = _check_against_the_chain(chain5, lambda u, r: smc_sample(model, u, 800, stages=[3, 6], ess_threshold=0.7, seed=r))
    assert result.n_evaluations == 3 * 800  # two partial stages and the final one, all counted
    assert result.n_resamplings >= 1


@pytest.mark.parametrize("kernel, step_nm", [("independence", 0.002), ("random-walk", 0.004)])
def test_annealed_smc_log_z_and_an_observable_match_the_analytic_chain(chain5, kernel, step_nm):
    """Annealed SMC from an untrained model to the chain through b = 0.25, 0.5, 0.75 with two
    Metropolis-Hastings moves after each stage: log Z and P(0 <= torsion < 2) against the exact
    values within 4.5 standard errors of 12 independent repeats."""
    from openmm_arbg.sampling.annealed import annealed_smc

    model = chain5[2]
    result = _check_against_the_chain(chain5, lambda u, r: annealed_smc(
        model, u, 400, betas=[0.25, 0.5, 0.75], kernel=kernel, n_steps=2, step_nm=step_nm, ess_threshold=0.7, seed=r))
    assert result.n_evaluations == 400 * (1 + 3 * 2)  # the start and every move, all counted
    assert result.n_resamplings >= 1 and len(result.acceptance) == 3 and all(0.02 < a < 1 for a in result.acceptance)


@pytest.mark.parametrize("kernel, step_nm", [("independence", 0.0), ("random-walk", 0.005)])
def test_tempered_move_leaves_the_tempered_target_invariant(chain5, kernel, step_nm):
    """Particles drawn from pi_b ∝ q exp(b g) (b = 0.5, target at 150 K, far from the model) by
    importance resampling of 20 000 model proposals keep their distribution under 10 moves: the
    mean of g = -u - log q changes by less than 4.5 standard errors over 8 repeats (a kernel that
    targets b = 1 instead moves it by many)."""
    from openmm_arbg.sampling.annealed import tempered_move

    ms, _, model = chain5
    beta, shifts = 0.5, []
    with ReducedPotential(ms.system, temperature=150.0) as u:
        for r in range(8):
            rng = np.random.default_rng(r)
            x, log_q = model.sample(20000, seed=r)
            g = -u(x) - log_q
            w = np.exp(beta * (g - g.max()))
            idx = rng.choice(len(x), size=1000, p=w / w.sum())
            x, log_q, g = x[idx], log_q[idx], g[idx]
            before = g.mean()
            accepted = 0
            for _ in range(10):
                x, log_q, g, acc = tempered_move(model, u, x, log_q, g, beta, kernel, step_nm or 0.002, rng)
                accepted += acc.sum()
            shifts.append(g.mean() - before)
            assert 0.005 < accepted / 10000 < 0.98, accepted / 10000
    se = np.std(shifts, ddof=1) / np.sqrt(len(shifts))
    assert abs(np.mean(shifts)) < 4.5 * se + 0.05, (np.mean(shifts), se)


def test_annealed_smc_refuses_bad_settings(chain5):
    from openmm_arbg.sampling.annealed import annealed_smc

    ms, _, model = chain5
    with ReducedPotential(ms.system, temperature=300.0) as u:
        for kwargs, words in ((dict(betas=[0.5, 0.2]), "increasing"), (dict(betas=[1.0]), "(0, 1)"),
                              (dict(betas=[0.5], kernel="hmc"), "kernel"), (dict(betas=[0.5], n_steps=-1), "n_steps"),
                              (dict(betas=[0.5], step_nm=0), "step_nm")):
            with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
                annealed_smc(model, u, 10, **kwargs)


def test_partial_system_keeps_only_terms_among_placed_atoms(alanine):
    import openmm
    import openmm.unit as unit

    mask = np.zeros(alanine.n_atoms, dtype=bool)
    mask[:6] = True
    sub = partial_system(alanine.system, mask)
    full = partial_system(alanine.system, np.ones(alanine.n_atoms, dtype=bool))

    def energy(system):
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(alanine.positions)
        return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    ref = openmm.Context(alanine.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ref.setPositions(alanine.positions)
    assert abs(energy(full) - ref.getState(getEnergy=True).getPotentialEnergy()._value) < 1e-6  # vacuum: all terms kept
    moved = np.asarray(alanine.positions_nm())
    moved[6:] += 5.0  # unplaced atoms anywhere: the sub-energy does not change
    ctx = openmm.Context(sub, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(alanine.positions)
    e0 = ctx.getState(getEnergy=True).getPotentialEnergy()._value
    ctx.setPositions(moved * unit.nanometer)
    assert abs(ctx.getState(getEnergy=True).getPotentialEnergy()._value - e0) < 1e-9


def test_bad_stages_are_refused(chain5):
    ms, _, model = chain5
    with ReducedPotential(ms.system, temperature=300.0) as u:
        with pytest.raises(ValueError, match="increasing model-coordinate cuts"):
            smc_sample(model, u, 10, stages=[6, 3])
        with pytest.raises(ValueError, match="one lambda"):
            smc_sample(model, u, 10, stages=[3], lambdas=[1.0, 0.5])


def test_smc_command_on_alanine_dipeptide(tmp_path, capsys):
    """arbg smc with the shipped model: log Z per run, the npz of particles and weights; bad
    options are refused before any computing."""
    from openmm_arbg.cli import main
    from openmm_arbg.pretrained import pretrained_path

    out = tmp_path / "smc.npz"
    argv = ["smc", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--n", "40", "--stages", "40", "--lambdas", "0.3",
            "--repeats", "2", "--output", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "log Z over 2 runs" in text and "energy evaluations" in text
    data = np.load(out)
    assert data["positions"].shape == (2, 40, 22, 3) and data["log_weights"].shape == (2, 40)
    assert np.all(np.abs(data["log_z"] - (-201.1)) < 3.0)  # log Z(target) - log Z(model) of this model (docs/benchmarks.md)
    annealed = ["smc", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--n", "40", "--betas", "0.5", "--mcmc-steps", "2",
                "--kernel", "random-walk", "--step-nm", "0.001", "--output", str(tmp_path / "annealed.npz")]
    assert main(annealed) == 0
    text = capsys.readouterr().out
    assert "acceptance" in text and "120 energy evaluations" in text  # 40 proposals + 2 moves of 40 particles
    data = np.load(tmp_path / "annealed.npz")
    assert data["betas"].tolist() == [0.5] and data["stages"].size == 0 and abs(data["log_z"][0] - (-201.1)) < 3.0
    assert main(argv[:5] + ["--lambdas", "0.3", "0.5"]) == 2
    assert main(argv[:5] + ["--output", str(tmp_path / "x.txt")]) == 2
    assert "give a .npz" in capsys.readouterr().err
