"""ArBGMove inside openmmtools multistate samplers: replica exchange free energies against
analytic values, storage and resume, parallel tempering."""


import numpy as np
import openmm
import openmm.unit as unit
import pytest
from openmmtools import cache, mcmc, multistate, states

from openmm_arbg import ArBG
from openmm_arbg.simulation.md import run_md
from openmm_arbg.sampling.mcmc import ArBGMove
from openmm_arbg.simulation.testsystems import harmonic_chain

from conftest import TINY_NETWORK

TEMPERATURES = [300.0, 380.0, 480.0]


@pytest.fixture(scope="module")
def chain_model(tmp_path_factory):
    ms, analytic = harmonic_chain(4)
    out = tmp_path_factory.mktemp("chain_md")
    frames = run_md(ms, str(out), n_steps=100_000, report_interval=50, temperature=480.0, equilibration_steps=1000, progress=False)
    path = tmp_path_factory.mktemp("model") / "chain.safetensors"
    ArBG.from_data(ms.topology, frames.xyz, representation="internal", n_bins=32, network=TINY_NETWORK, seed=4).save(path)
    return ms, analytic, str(path)


def _move(path):
    return mcmc.SequenceMove(
        [mcmc.LangevinDynamicsMove(n_steps=20, timestep=1.0 * unit.femtosecond), ArBGMove(path, n_attempts=20, buffer_size=500)]
    )


def _context_caches():
    platform = openmm.Platform.getPlatformByName("Reference")
    return dict(energy_context_cache=cache.ContextCache(platform=platform), sampler_context_cache=cache.ContextCache(platform=platform))


def test_replica_exchange_mbar_matches_analytic_free_energies(chain_model, tmp_path):
    ms, analytic, path = chain_model
    np.random.seed(0)
    thermo = [states.ThermodynamicState(ms.system, T * unit.kelvin) for T in TEMPERATURES]
    sampler = multistate.ReplicaExchangeSampler(mcmc_moves=_move(path), number_of_iterations=250)
    reporter = multistate.MultiStateReporter(str(tmp_path / "re.nc"), checkpoint_interval=10)
    sampler.create(thermo, states.SamplerState(ms.positions), reporter)
    sampler.energy_context_cache, sampler.sampler_context_cache = _context_caches().values()
    sampler.run()
    stats = sampler.mcmc_moves[0].move_list[1].statistics
    assert stats["n_accepted"] > 0
    analyzer = multistate.MultiStateSamplerAnalyzer(reporter)
    Deltaf, dDeltaf = analyzer.get_free_energy()
    exact = [-analytic.log_partition_function(T) for T in TEMPERATURES]
    for i in range(1, len(TEMPERATURES)):
        expected = exact[i] - exact[0]
        assert abs(Deltaf[0, i] - expected) < 4.5 * dDeltaf[0, i] + 1e-3, (i, Deltaf[0, i], expected, dDeltaf[0, i])
    reporter.close()


def test_resume_from_storage(chain_model, tmp_path):
    ms, _, path = chain_model
    np.random.seed(1)
    storage = str(tmp_path / "resume.nc")
    thermo = [states.ThermodynamicState(ms.system, T * unit.kelvin) for T in TEMPERATURES]
    sampler = multistate.ReplicaExchangeSampler(mcmc_moves=_move(path), number_of_iterations=5)
    reporter = multistate.MultiStateReporter(storage, checkpoint_interval=1)
    sampler.create(thermo, states.SamplerState(ms.positions), reporter)
    sampler.run()
    proposed = sampler.mcmc_moves[0].move_list[1].n_proposed
    reporter.close()
    del sampler

    resumed = multistate.ReplicaExchangeSampler.from_storage(multistate.MultiStateReporter(storage, checkpoint_interval=1))
    move = resumed.mcmc_moves[0].move_list[1]
    assert isinstance(move, ArBGMove) and move.proposal.model_path == path
    assert move.n_proposed == proposed
    resumed.extend(3)
    assert resumed.iteration == 8
    assert resumed.mcmc_moves[0].move_list[1].n_proposed > proposed


def test_parallel_tempering(chain_model, tmp_path):
    ms, _, path = chain_model
    np.random.seed(2)
    sampler = multistate.ParallelTemperingSampler(mcmc_moves=_move(path), number_of_iterations=5)
    reporter = multistate.MultiStateReporter(str(tmp_path / "pt.nc"), checkpoint_interval=1)
    sampler.create(
        states.ThermodynamicState(ms.system, 300 * unit.kelvin),
        states.SamplerState(ms.positions),
        reporter,
        min_temperature=300 * unit.kelvin,
        max_temperature=500 * unit.kelvin,
        n_temperatures=3,
    )
    sampler.run()
    assert sum(m.move_list[1].n_proposed for m in sampler.mcmc_moves) == 3 * 5 * 20
    reporter.close()


MPI_SCRIPT = """
import sys, numpy as np, openmm, openmm.unit as unit
from openmmtools import cache, mcmc, multistate, states
from openmm_arbg import ArBGMove
from openmm_arbg.simulation.testsystems import harmonic_chain
from mpi4py import MPI
model_path, storage = sys.argv[1], sys.argv[2]
np.random.seed(MPI.COMM_WORLD.Get_rank())
ms, _ = harmonic_chain(4)
thermo = [states.ThermodynamicState(ms.system, T * unit.kelvin) for T in (300.0, 380.0, 480.0, 600.0)]
move = mcmc.SequenceMove([mcmc.LangevinDynamicsMove(n_steps=10), ArBGMove(model_path, n_attempts=10, buffer_size=200)])
sampler = multistate.ReplicaExchangeSampler(mcmc_moves=move, number_of_iterations=10)
platform = openmm.Platform.getPlatformByName("Reference")
sampler.energy_context_cache = cache.ContextCache(platform=platform)
sampler.sampler_context_cache = cache.ContextCache(platform=platform)
reporter = multistate.MultiStateReporter(storage, checkpoint_interval=1)
sampler.create(thermo, states.SamplerState(ms.positions), reporter)
sampler.run()
stats = [m.move_list[1].statistics for m in sampler.mcmc_moves]
rank = MPI.COMM_WORLD.Get_rank()
with open(storage + f".rank{rank}", "w") as f:
    f.write(f"{MPI.COMM_WORLD.Get_size()} {sum(s['n_proposed'] for s in stats)}")
"""


def test_replica_exchange_under_mpirun(chain_model, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    pytest.importorskip("mpi4py")
    mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun (pip install mpich mpi4py)")
    _, _, path = chain_model
    script = tmp_path / "mpi_re.py"
    script.write_text(MPI_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [mpirun, "-np", "2", sys.executable, str(script), path, str(tmp_path / "mpi.nc")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # both ranks ran, and statistics are synchronised: 4 states x 10 iterations x 10 attempts
    for rank in (0, 1):
        assert (tmp_path / f"mpi.nc.rank{rank}").read_text() == "2 400"


def test_sams_sampler(chain_model, tmp_path):
    ms, _, path = chain_model
    np.random.seed(4)
    thermo = [states.ThermodynamicState(ms.system, T * unit.kelvin) for T in TEMPERATURES]
    sampler = multistate.SAMSSampler(mcmc_moves=_move(path), number_of_iterations=8)
    sampler.energy_context_cache, sampler.sampler_context_cache = _context_caches().values()
    reporter = multistate.MultiStateReporter(str(tmp_path / "sams.nc"), checkpoint_interval=1)
    sampler.create(thermo, states.SamplerState(ms.positions), reporter)
    sampler.run()
    assert sampler.iteration == 8
    assert sum(m.move_list[1].n_proposed for m in sampler.mcmc_moves) == 8 * 20
    reporter.close()
