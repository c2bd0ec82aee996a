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
