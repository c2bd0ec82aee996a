"""Shared fixtures: small molecules and tiny, fast models."""

import logging

import numpy as np
import pytest
import torch

logging.getLogger("pymbar").setLevel(logging.ERROR)
torch.set_num_threads(1)

TINY_NETWORK = dict(n_layer=1, n_head=2, d_model=32)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (run with -m slow)")


def jittered(positions_nm, n, scale=0.005, seed=0):
    """``n`` copies of a structure with Gaussian noise (nm): cheap stand-in for MD frames."""
    rng = np.random.default_rng(seed)
    x = np.asarray(positions_nm, dtype=float)
    return x[None] + scale * rng.standard_normal((n,) + x.shape)


@pytest.fixture(scope="session")
def alanine():
    from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum

    return alanine_dipeptide_vacuum()


@pytest.fixture(scope="session")
def toluene():
    from openmmtools import testsystems

    t = testsystems.TolueneVacuum()
    from openmm_arbg.simulation.systems import MolecularSystem
    import openmm.unit as unit

    return MolecularSystem("toluene", t.system, t.topology, t.positions, 300 * unit.kelvin)
