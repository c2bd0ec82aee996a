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


def atom_index(graph, resname, name):
    """Index of the first atom called ``name`` in a residue ``resname`` of a MolecularGraph."""
    return next(i for i, a in enumerate(graph.atoms) if a["resname"] == resname and a["name"] == name)


def turn_about_bond(x, graph, j, k, angle):
    """Rotate the atoms on ``k``'s side of the bond ``j-k`` (the subtree beyond ``k``) by ``angle`` rad about it."""
    side, stack = {k}, [k]
    while stack:
        a = stack.pop()
        for b in graph.neighbors[a]:
            if b != j and b not in side:
                side.add(b)
                stack.append(b)
    side.discard(k)
    axis = (x[k] - x[j]) / np.linalg.norm(x[k] - x[j])
    c, s = np.cos(angle), np.sin(angle)
    out = x.copy()
    for a in side:
        v = x[a] - x[k]
        out[a] = x[k] + v * c + np.cross(axis, v) * s + axis * (axis @ v) * (1 - c)
    return out


def n_coordinates_changed(z0, z1, tol=1e-6):
    """How many model coordinates differ between two rows (torsions compared on the circle; bonds
    and angles that move less than ``tol`` count as unchanged)."""
    d = np.abs(np.angle(np.exp(1j * (np.asarray(z1) - np.asarray(z0)))))
    return int((d > tol).sum())


def chain_with_untrained_model(n_atoms, directory):
    """The analytic harmonic chain, 20 ps of its MD (in ``directory``) and an untrained tiny model
    whose bins are fitted to it: (MolecularSystem, ChainAnalytic, ArBG)."""
    from openmm_arbg import ArBG
    from openmm_arbg.simulation.md import run_md
    from openmm_arbg.simulation.testsystems import harmonic_chain

    ms, analytic = harmonic_chain(n_atoms)
    frames = run_md(ms, str(directory), n_steps=20_000, report_interval=20, equilibration_steps=1000, progress=False, seed=1)
    model = ArBG.from_data(ms.topology, frames.xyz.astype(float), n_bins=32, network=TINY_NETWORK, seed=2)
    return ms, analytic, model


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


# ---------------------------------------------------------------------------- planted errors
# ARBG_PLANT_ERROR=<mode>:<target> (see tests/planted_errors.py) plants a 0.3-nat error into one
# coordinate's log density for the whole session, so that one can check the suite fails with it.
_PLANTED = []


def pytest_sessionstart(session):
    import os

    if not os.environ.get("ARBG_PLANT_ERROR", "").strip():
        return
    from planted_errors import from_environment, planted_error

    spec = from_environment()
    if spec is not None:
        manager = planted_error(*spec)
        manager.__enter__()
        _PLANTED.append(manager)


def pytest_sessionfinish(session, exitstatus):
    while _PLANTED:
        _PLANTED.pop().__exit__(None, None, None)


def pytest_report_header(config):
    import os

    value = os.environ.get("ARBG_PLANT_ERROR", "").strip()
    return f"ARBG_PLANT_ERROR={value}: an error is planted in the model's log density" if value else None


# ---------------------------------------------------------------------------- exact chain states
# The harmonic chain's shape distribution factorises into exactly known 1-D laws (see
# openmm_arbg.simulation.testsystems), so exact Boltzmann states can be drawn directly. Used by
# tests/test_exactness_power.py and tests/test_model_core.py.


def _inverse_cdf_draw(density, lo, hi, size, rng, n_grid=200_001):
    """Draws from a 1-D density on [lo, hi] by inverting its trapezoid-rule CDF on a fine grid
    (error O(h^2) in any expectation, h ~ 1e-5 of the range: far below any statistical error)."""
    grid = np.linspace(lo, hi, n_grid)
    p = density(grid)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]))])
    cdf /= cdf[-1]
    return np.interp(rng.random(size), cdf, grid)


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def chain_positions(r, theta, phi):
    """Positions (n, N, 3) of a chain 0-1-...-(N-1) from its bond lengths r (n, N-1), angles
    theta (n, N-2) (angle i, i+1, i+2) and torsions phi (n, N-3) (torsion i..i+3, IUPAC sign),
    placed atom by atom (our own NeRF, independent of the package's representations)."""
    n, n_atoms = r.shape[0], r.shape[1] + 1
    x = np.zeros((n, n_atoms, 3))
    x[:, 1, 0] = r[:, 0]
    x[:, 2] = x[:, 1] + r[:, 1, None] * np.stack([-np.cos(theta[:, 0]), np.sin(theta[:, 0]), np.zeros(n)], -1)
    for i in range(3, n_atoms):
        a, b, c = x[:, i - 3], x[:, i - 2], x[:, i - 1]
        bc = _unit(c - b)
        normal = _unit(np.cross(b - a, bc))
        m = np.cross(normal, bc)
        R, T, P = r[:, i - 1, None], theta[:, i - 2, None], phi[:, i - 3, None]
        x[:, i] = c - R * np.cos(T) * bc + R * np.sin(T) * np.cos(P) * m + R * np.sin(T) * np.sin(P) * normal
    return x


def exact_chain_states(analytic, n, seed, temperature_K=300.0):
    """``n`` independent exact Boltzmann states (n, N, 3) nm of the harmonic chain described by
    ``analytic`` (a ChainAnalytic), each randomly rotated and translated."""
    import math

    from scipy.spatial.transform import Rotation

    from openmm_arbg.physics import kT_kJ_per_mol

    rng = np.random.default_rng(seed)
    beta = 1.0 / kT_kJ_per_mol(temperature_K)
    N = analytic.n_atoms
    width = 12 * math.sqrt(1.0 / (beta * analytic.k_bond))
    bond = lambda r: r**2 * np.exp(-beta * analytic.k_bond * (r - analytic.r0) ** 2 / 2)  # noqa: E731
    angle = lambda t: np.sin(t) * np.exp(-beta * analytic.k_angle * (t - analytic.theta0) ** 2 / 2)  # noqa: E731
    torsion = lambda p: np.exp(-beta * analytic.k_torsion * (1 + np.cos(analytic.periodicity * p - analytic.phase)))  # noqa: E731
    r = _inverse_cdf_draw(bond, max(1e-9, analytic.r0 - width), analytic.r0 + width, (n, N - 1), rng)
    theta = _inverse_cdf_draw(angle, 0.0, math.pi, (n, N - 2), rng)
    phi = _inverse_cdf_draw(torsion, -math.pi, math.pi, (n, N - 3), rng)
    x = chain_positions(r, theta, phi)
    rotation = Rotation.random(n, random_state=int(rng.integers(2**31))).as_matrix()
    return np.einsum("nij,naj->nai", rotation, x) + rng.normal(0.0, 1.0, (n, 1, 3))


def chain_geometry(topology, positions):
    """Bond lengths (n, N-1), angles (n, N-2), torsions (n, N-3) of a chain, measured by mdtraj."""
    import mdtraj

    traj = mdtraj.Trajectory(np.asarray(positions, dtype=np.float32), mdtraj.Topology.from_openmm(topology))
    N = traj.n_atoms
    r = mdtraj.compute_distances(traj, [[i, i + 1] for i in range(N - 1)]).astype(float)
    theta = mdtraj.compute_angles(traj, [[i, i + 1, i + 2] for i in range(N - 2)]).astype(float)
    phi = mdtraj.compute_dihedrals(traj, [[i, i + 1, i + 2, i + 3] for i in range(N - 3)]).astype(float)
    return r, theta, phi


CHAIN_TRAINING_STEPS = 100


@pytest.fixture(scope="session")
def chain4_trained(tmp_path_factory):
    """The 4-atom harmonic chain and, per representation, the path of a tiny model (32 bins)
    trained for 100 steps on 4000 exact states (seed 7; ~3 s each). An untrained model accepts 2-3 %
    of whole-molecule proposals on this chain, too few for tests with power; this one ~60-80 %.

    Returns ``(MolecularSystem, ChainAnalytic, {"internal": path, "cartesian": path})``."""
    from openmm_arbg import ArBG
    from openmm_arbg.simulation.testsystems import harmonic_chain
    from openmm_arbg.training import Trainer

    ms, analytic = harmonic_chain(4)
    train = exact_chain_states(analytic, 4000, seed=7)
    out = tmp_path_factory.mktemp("chain4_trained")
    paths = {}
    for kind in ("internal", "cartesian"):
        model = ArBG.from_data(ms.topology, train, representation=kind, n_bins=32, network=TINY_NETWORK, seed=2)
        steps = CHAIN_TRAINING_STEPS
        config = dict(n_steps=steps, batch_size=256, learning_rate=3e-3, warmup_steps=20, eval_interval=steps, checkpoint_interval=steps, seed=1)
        Trainer(model, train, config, output_dir=str(out / f"train_{kind}"), resume=False, progress=False).fit()
        paths[kind] = out / f"chain4_{kind}.safetensors"
        model.save(paths[kind])
    return ms, analytic, paths
