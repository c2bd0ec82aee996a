"""Inference-time control: fixed coordinates and the free-energy profile of a coordinate
(potential of mean force without umbrella windows) against the analytic chain."""

import numpy as np
import pytest
import torch

from openmm_arbg.physics import kT_kJ_per_mol
from openmm_arbg.sampling.control import coordinate_free_energy, sample_with_fixed
from openmm_arbg.sampling.energies import ReducedPotential

from conftest import chain_with_untrained_model


@pytest.fixture(scope="module")
def chain_model(tmp_path_factory):
    return chain_with_untrained_model(4, tmp_path_factory.mktemp("chain_md_control"))


def test_fixed_coordinate_is_exact_and_log_g_is_the_joint_minus_its_conditional(chain_model, alanine):
    _, _, model = chain_model
    torsion = model.representation.coordinate_kinds.index("periodic")
    x, log_g = sample_with_fixed(model, 50, {torsion: 1.0}, seed=0)
    z, _ = model.to_model_coordinates(x)
    assert torch.allclose(z[:, torsion], torch.full((50,), 1.0, dtype=torch.float64), atol=1e-9)
    # joint = density of the drawn coordinates given the fixed one + the fixed coordinate's conditional
    term = model.density.log_prob(z, start=torsion, stop=torsion + 1).numpy()
    assert np.abs(model.log_prob(x) - (log_g + term)).max() < 1e-6
    with pytest.raises(ValueError, match="model-coordinate indices"):
        sample_with_fixed(model, 2, {model.n_coords: 0.0})


def test_free_energy_profile_of_a_torsion_matches_the_analytic_law(chain_model):
    """F(phi) from fixed-torsion importance sampling, 13 grid points x 2000 proposals, against
    beta V(phi); residuals within 4 standard errors (delta method) after removing the constant."""
    ms, analytic, model = chain_model
    torsion = model.representation.coordinate_kinds.index("periodic")
    values = np.linspace(-3.0, 3.0, 13)
    with ReducedPotential(ms.system, temperature=300.0) as u:
        result = coordinate_free_energy(model, u, torsion, values, n_per_value=2000, seed=0)
    beta = 1.0 / kT_kJ_per_mol(300.0)
    exact = beta * analytic.k_torsion * (1 + np.cos(analytic.periodicity * values - analytic.phase))
    residual = result["free_energy"] - exact
    weights = 1.0 / result["error"] ** 2
    residual -= np.average(residual, weights=weights)
    z = residual / result["error"]
    assert np.all(np.abs(z) < 4.0), z
    assert result["n_evaluations"] == 13 * 2000
    # the profile spans the barrier (about 2 beta k_torsion = 2 kT here)
    assert np.ptp(result["free_energy"]) > 1.0


@pytest.fixture(scope="module")
def chain5_first_torsions(tmp_path_factory):
    """The 5-atom analytic chain (two independent torsions) and a tiny model trained for 100 steps
    on exact states whose first torsion coordinates are its two dihedrals, named by atom indices,
    the second one first: (MolecularSystem, ChainAnalytic, ArBG, training positions)."""
    from openmm_arbg import ArBG
    from openmm_arbg.simulation.testsystems import harmonic_chain
    from openmm_arbg.training import Trainer

    from conftest import CHAIN_TRAINING_STEPS, TINY_NETWORK, exact_chain_states

    ms, analytic = harmonic_chain(5)
    x = exact_chain_states(analytic, 4000, seed=3)
    model = ArBG.from_data(ms.topology, x, n_bins=32, network=TINY_NETWORK, seed=4, first_torsions=["4,3,2,1", (0, 1, 2, 3)])
    steps = CHAIN_TRAINING_STEPS
    config = dict(n_steps=steps, batch_size=256, learning_rate=3e-3, warmup_steps=20, eval_interval=steps,
                  checkpoint_interval=steps, seed=1)
    Trainer(model, x, config, output_dir=str(tmp_path_factory.mktemp("chain5")), resume=False, progress=False).fit()
    return ms, analytic, model, x


def test_first_torsions_are_the_first_torsion_coordinates_and_round_trip(chain5_first_torsions, tmp_path):
    from openmm_arbg import ArBG

    ms, _, model, x = chain5_first_torsions
    assert model.dihedral_coordinate("1,2,3,4") == 0  # generated first, read in either direction
    assert model.dihedral_coordinate((0, 1, 2, 3)) == 1
    rep = model.representation
    assert rep.coordinate_kinds[:2] == ["periodic", "periodic"] and rep.coordinate_atom_tuples()[0] in [(1, 2, 3, 4), (4, 3, 2, 1)]
    z, log_volume = model.to_model_coordinates(x[:20])
    import mdtraj

    angles = mdtraj.compute_dihedrals(mdtraj.Trajectory(x[:20], model.topology), [[1, 2, 3, 4], [0, 1, 2, 3]])
    assert np.allclose(z[:, [0, 1]].numpy(), angles, atol=1e-5)
    back, log_volume_back = rep.from_model_coordinates(z)
    assert torch.allclose(model.to_model_coordinates(back.numpy())[0], z, atol=1e-9)
    assert torch.allclose(log_volume_back, log_volume) and torch.allclose(rep.log_volume(z), log_volume)
    # the same Z-matrix in its own order: the same Jacobian, the coordinates permuted
    plain = type(rep)(model.graph, rep.anchors, first_torsions=rep.first_torsions, leading=[])
    z_plain, log_volume_plain = plain.to_model_coordinates(torch.as_tensor(x[:20]))
    assert plain.torsion_coordinate((1, 2, 3, 4)) == 5 and torch.allclose(log_volume_plain, log_volume)
    assert torch.allclose(z_plain[:, rep._columns], z) and sorted(rep.coordinate_kinds) == sorted(plain.coordinate_kinds)
    # the stored model rebuilds the same coordinates
    model.save(str(tmp_path / "m.safetensors"))
    again = ArBG.load(str(tmp_path / "m.safetensors"))
    assert again.representation.zmatrix == rep.zmatrix and again.representation.leading == rep.leading
    assert np.allclose(again.log_prob(x[:5]), model.log_prob(x[:5]))
    # a model stored before torsions led the order (no "leading" in its file) keeps its Z-matrix order
    d = model.representation.to_dict()
    del d["leading"]
    from openmm_arbg.molecule.representation import build_representation

    old = build_representation(d, model.graph)
    assert old.leading == [] and old.torsion_coordinate((1, 2, 3, 4)) == 5 and old.torsion_coordinate((0, 1, 2, 3)) == 8


def test_leading_torsion_is_drawn_first_and_its_conditional_is_exact(chain5_first_torsions):
    """Fixing coordinate 0 leaves nothing to draw from a marginal: log g is log q minus the fixed
    torsion's own term, and the samples' log q is the model's log_prob."""
    ms, _, model, x = chain5_first_torsions
    xs, log_q = model.sample(200, seed=2)
    assert np.abs(model.log_prob(xs) - log_q).max() < 1e-6
    xf, log_g = sample_with_fixed(model, 100, {0: 1.3}, seed=3)
    z, _ = model.to_model_coordinates(xf)
    assert torch.allclose(z[:, 0], torch.full((100,), 1.3, dtype=torch.float64), atol=1e-9)
    first = model.density.log_prob(z, start=0, stop=1).numpy()
    assert np.abs(model.log_prob(xf) - (log_g + first)).max() < 1e-6
    assert np.ptp(first) < 1e-9  # the first coordinate's density does not depend on anything


def test_bin_averaged_profile_matches_the_analytic_bin_average(chain5_first_torsions):
    """With subdivisions, each of 8 bins of the leading torsion is -ln of the bin-averaged density
    (the quantity of a histogram or an umbrella + MBAR bin): against the exact bin average of
    exp(-beta V) (fine quadrature), residuals within 4 standard errors after removing the constant;
    the point values at the bin centres differ from it measurably where F is curved."""
    from openmm_arbg.sampling.control import dihedral_profile

    ms, analytic, model, _ = chain5_first_torsions
    with ReducedPotential(ms.system, temperature=300.0) as u:
        binned = dihedral_profile(model, u, ["1,2,3,4"], n_grid=8, n_per_point=400, seed=2, subdivisions=4)
    assert binned.coordinates == [0] and binned.n_evaluations == 32 * 400 and binned.values.shape == (8, 1)
    assert binned.subdivisions == 4 and np.all(binned.ess > 0)
    beta = 1.0 / kT_kJ_per_mol(300.0)
    law = lambda v: beta * analytic.k_torsion * (1 + np.cos(analytic.periodicity * v - analytic.phase))  # noqa: E731
    edges = np.linspace(-np.pi, np.pi, 9)
    exact = np.array([-np.log(np.mean(np.exp(-law(np.linspace(a, b, 2001))))) for a, b in zip(edges[:-1], edges[1:])])
    for f, e, name in ((binned.free_energy, binned.error, "bin average"),):
        residual = f - exact
        residual -= np.average(residual, weights=1.0 / e**2)
        assert np.all(np.abs(residual / e) < 4.0), (name, residual / e)
    centre = law(binned.values[:, 0])  # the point values differ from the bin averages by far more than the errors
    gap = (centre - centre.mean()) - (exact - exact.mean())
    assert np.abs(gap).max() > 8 * binned.error.max()


def test_first_torsions_errors_name_the_problem(chain5_first_torsions, alanine):
    from openmm_arbg import ArBG

    ms, _, model, x = chain5_first_torsions
    with pytest.raises(ValueError, match="not a bonded chain"):
        ArBG.from_data(ms.topology, x[:10], network=dict(n_layer=1, n_head=1, d_model=8, d_hidden=8), first_torsions=["0,1,3,4"])
    with pytest.raises(ValueError, match="both its end atoms"):
        ArBG.from_data(ms.topology, x[:10], network=dict(n_layer=1, n_head=1, d_model=8, d_hidden=8),
                       first_torsions=["0,1,2,3", "1,2,3,4", "3,2,1,0"])
    with pytest.raises(ValueError, match="internal"):
        ArBG.from_data(ms.topology, x[:10], representation="cartesian", first_torsions=["0,1,2,3"])
    shipped = ArBG.from_pretrained("alanine_dipeptide_vacuum")
    with pytest.raises(ValueError, match="--first-torsions phi"):
        shipped.dihedral_coordinate("phi")
    with pytest.raises(ValueError, match="no dihedral 'phi3'"):
        shipped.dihedral_coordinate("phi3")


def test_two_dimensional_profile_matches_the_analytic_law_and_region_probabilities(chain5_first_torsions):
    """F(phi_a, phi_b) on a 6 x 6 grid against beta V(phi_a) + beta V(phi_b) (the chain's torsions
    are independent), within 4 standard errors; P(phi_a > 0) from the grid against the exact
    integral within 4 standard errors plus the midpoint rule's error."""
    from openmm_arbg.sampling.control import dihedral_profile

    ms, analytic, model, _ = chain5_first_torsions
    with ReducedPotential(ms.system, temperature=300.0) as u:
        profile = dihedral_profile(model, u, ["1,2,3,4", "0,1,2,3"], n_grid=6, n_per_point=500, seed=5)
    beta = 1.0 / kT_kJ_per_mol(300.0)

    def v(p):
        return beta * analytic.k_torsion * (1 + np.cos(analytic.periodicity * p - analytic.phase))

    exact = v(profile.values[:, 0]) + v(profile.values[:, 1])
    residual = profile.free_energy - exact
    residual -= np.average(residual, weights=1 / profile.error**2)
    assert np.all(np.abs(residual / profile.error) < 4.0), residual / profile.error
    assert profile.n_evaluations == 36 * 500 and profile.values.shape == (36, 2)
    axis = profile.axes[0]
    p, dp = profile.region_probability(lambda val: np.abs(val[:, 0]) < np.pi / 3)  # bins centred at +-pi/6
    midpoint = np.exp(-v(axis))[np.abs(axis) < np.pi / 3].sum() / np.exp(-v(axis)).sum()  # the rule with exact F
    assert abs(p - midpoint) < 4 * dp, (p, dp, midpoint)
    exact_p = analytic.probability("torsion", -np.pi / 3, np.pi / 3)
    assert abs(midpoint - exact_p) < 0.05, (midpoint, exact_p)  # the 6-point rule itself
    assert 0.05 < exact_p < 0.95
    rows = profile.table()
    assert len(rows) == 36 and {"free_energy_kT", "error_kT", "pareto_k"} <= set(rows[0])


def test_profile_command_writes_table_plot_and_compares_with_an_umbrella_run(tmp_path, alanine, capsys):
    """arbg profile on alanine dipeptide with an untrained model whose first torsions are phi and
    psi: the files, the regions and the comparison with an arbg umbrella run over phi; a model
    without phi as a coordinate is refused before any computing."""
    import json

    import mdtraj

    from openmm_arbg import ArBG
    from openmm_arbg.cli import main
    from openmm_arbg.pretrained import pretrained_path
    from openmm_arbg.simulation.md import run_md

    from conftest import TINY_NETWORK

    traj = run_md(alanine, str(tmp_path / "md"), n_steps=2000, report_interval=20, equilibration_steps=200, progress=False)
    model = ArBG.from_data(alanine.topology, traj.xyz.astype(float), n_bins=32, network=TINY_NETWORK, first_torsions=["phi", "psi"])
    assert model.dihedral_coordinate("phi") == 0 and model.dihedral_coordinate("psi") == 1
    model.save(str(tmp_path / "m.safetensors"))
    umbrella = ["umbrella", "--dihedrals", "phi", "--windows", "4", "--ps", "2", "--report-ps", "0.1", "--equilibration-ps", "0.5",
                "--workers", "1", "--output", str(tmp_path / "umb"), "--quiet", "--save-positions", "--export-windows"]
    assert main(umbrella) == 0
    windows = mdtraj.load(str(tmp_path / "umb" / "windows.dcd"), top=str(tmp_path / "umb" / "topology.pdb"))  # training data for conditionals
    assert windows.n_frames == 4 * 20
    out = tmp_path / "prof"
    argv = ["profile", "--model", str(tmp_path / "m.safetensors"), "--dihedrals", "phi", "--grid", "4", "--n-per-point", "16",
            "--workers", "1", "--reference", str(tmp_path / "umb"), "--output", str(out), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "P(phi>0)" in text and "points compared" in text
    result = json.loads((out / "result.json").read_text())
    assert result["n_evaluations"] == 64 and result["model_coordinates"] == [0] and "phi>0" in result["regions"]
    assert len(result["reference"]["z"]) == 4
    assert (out / "profile.png").stat().st_size > 1000 and len((out / "profile.csv").read_text().splitlines()) == 5
    two = ["profile", "--model", str(tmp_path / "m.safetensors"), "--dihedrals", "phi", "psi", "--grid", "3", "--n-per-point", "8",
           "--workers", "1", "--output", str(tmp_path / "prof2"), "--quiet"]
    assert main(two) == 0
    assert len((tmp_path / "prof2" / "profile.csv").read_text().splitlines()) == 10
    capsys.readouterr()
    assert main(["profile", "--model", pretrained_path("alanine_dipeptide_vacuum"), "--output", str(tmp_path / "p3")]) == 2
    assert "--first-torsions phi" in capsys.readouterr().err and not (tmp_path / "p3" / "result.json").exists()


@pytest.mark.parametrize("sequence, names", [("AAA", ["phi3", "psi3", "phi2", "psi4"]), ("GSV", ["psi4", "phi2"])])
def test_first_torsions_on_capped_peptides(sequence, names):
    """Named backbone dihedrals of other peptides become periodic model coordinates whose values
    are mdtraj's dihedrals; the bijection still round-trips and proposals keep their handedness."""
    import mdtraj
    import openmm.unit as unit

    from openmm_arbg import ArBG
    from openmm_arbg.analysis.observables import dihedral_indices
    from openmm_arbg.simulation.systems import capped_peptide

    from conftest import TINY_NETWORK, jittered

    ms = capped_peptide(sequence)
    x = jittered(np.asarray(ms.positions.value_in_unit(unit.nanometer)), 64, seed=1)
    model = ArBG.from_data(ms.topology, x, n_bins=16, network=TINY_NETWORK, first_torsions=names)
    columns = [model.dihedral_coordinate(n) for n in names]
    assert columns == list(range(len(names)))  # generated first, in the order given
    assert all(model.representation.coordinate_kinds[c] == "periodic" for c in columns)
    z, _ = model.to_model_coordinates(x[:8])
    top = mdtraj.Topology.from_openmm(ms.topology)
    angles = mdtraj.compute_dihedrals(mdtraj.Trajectory(x[:8], top), dihedral_indices(top, names))
    assert np.allclose(z[:, columns].numpy(), angles, atol=1e-5)
    back, _ = model.representation.from_model_coordinates(z)
    assert torch.allclose(model.to_model_coordinates(back.numpy())[0], z, atol=1e-8)
    samples, _ = model.sample(32, seed=0)
    assert model.check_stereo(samples).all()


def test_shipped_phi_model_and_reference_by_name(tmp_path, capsys):
    """The shipped model with phi and psi first and the shipped 1-D phi umbrella reference, named
    on the command line as a new user would (docs/benchmarks.md section 12 runs them at full size)."""
    import json

    from openmm_arbg import ArBG
    from openmm_arbg.cli import main

    model = ArBG.from_pretrained("alanine_dipeptide_vacuum_phi_psi_first")
    assert model.dihedral_coordinate("phi") == 0 and model.dihedral_coordinate("psi") == 1
    argv = ["profile", "--model", "alanine_dipeptide_vacuum_phi_psi_first", "--grid", "36", "--n-per-point", "8", "--workers", "1",
            "--reference", "alanine_dipeptide_vacuum_300K_phi_umbrella", "--output", str(tmp_path / "p"), "--quiet"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "p" / "result.json").read_text())
    assert result["n_evaluations"] == 36 * 8 and result["subdivisions"] == 4 and result["reference"]["n_defined"] == 36
    capsys.readouterr()
    assert main(argv[:4] + ["12"] + argv[5:]) == 2  # the shipped reference has 36 bins
    assert "--grid 36" in capsys.readouterr().err
