"""Replica exchange of alanine dipeptide (vacuum) over 300-450 K with ArBGMove + Langevin moves,
stored in a netCDF file, then MBAR free energies of the temperature states from openmmtools'
analyzer. The acceptance at every temperature uses that state's own reduced potential, so one
model trained at 300 K is exact at all of them.

    python examples/replica_exchange.py            # about 5 minutes on 2 cores
    python examples/replica_exchange.py --resume   # extend a stored run (the move reloads its model by path + hash)
"""

import argparse
import os

import numpy as np
import openmm
import openmm.unit as unit
from openmmtools import cache, mcmc, multistate, states

from openmm_arbg import ArBGMove
from openmm_arbg.pretrained import pretrained_path
from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum

parser = argparse.ArgumentParser()
parser.add_argument("--storage", default="arbg_replica_exchange.nc")
parser.add_argument("--iterations", type=int, default=100)
parser.add_argument("--resume", action="store_true")
args = parser.parse_args()

platform = openmm.Platform.getPlatformByName("Reference")
if args.resume:
    sampler = multistate.ReplicaExchangeSampler.from_storage(args.storage)
    sampler.energy_context_cache = cache.ContextCache(platform=platform)
    sampler.sampler_context_cache = cache.ContextCache(platform=platform)
    sampler.extend(args.iterations)
else:
    if os.path.exists(args.storage):
        raise SystemExit(f"{args.storage} exists: use --resume, or remove it to start over")
    np.random.seed(0)
    ms = alanine_dipeptide_vacuum()
    temperatures = [300.0, 340.0, 390.0, 450.0]
    thermo = [states.ThermodynamicState(ms.system, T * unit.kelvin) for T in temperatures]
    move = mcmc.SequenceMove([
        mcmc.LangevinDynamicsMove(n_steps=100, timestep=1.0 * unit.femtosecond),
        ArBGMove(pretrained_path("alanine_dipeptide_vacuum"), n_attempts=5),
    ])
    sampler = multistate.ReplicaExchangeSampler(mcmc_moves=move, number_of_iterations=args.iterations)
    sampler.energy_context_cache = cache.ContextCache(platform=platform)
    sampler.sampler_context_cache = cache.ContextCache(platform=platform)
    reporter = multistate.MultiStateReporter(args.storage, checkpoint_interval=10)
    sampler.create(thermo, states.SamplerState(ms.positions), reporter)
    sampler.run()

for state, m in enumerate(sampler.mcmc_moves):
    arbg = m.move_list[1]
    print(f"state {state}: ArBGMove accepted {arbg.n_accepted} of {arbg.n_proposed}")
analyzer = multistate.MultiStateSamplerAnalyzer(multistate.MultiStateReporter(args.storage, open_mode="r"))
Deltaf, dDeltaf = analyzer.get_free_energy()
for k in range(1, len(Deltaf)):
    print(f"f_{k} - f_0 = {Deltaf[0, k]:.3f} +- {dDeltaf[0, k]:.3f} kT")
