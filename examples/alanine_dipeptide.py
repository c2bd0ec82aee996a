"""Sample alanine dipeptide (vacuum, 300 K) with the shipped ArBG: importance sampling, then an
openmmtools MCMCSampler whose move adds ArBGMove to Langevin dynamics.

    python examples/alanine_dipeptide.py

A few minutes on 2 CPU cores. The same as `arbg demo` without the MD and training steps.
"""

import numpy as np
import openmm
import openmm.unit as unit
from openmmtools import cache, mcmc, states

from openmm_arbg import ArBG, ArBGMove
from openmm_arbg.analysis.observables import BASINS, alanine_dipeptide_basins, backbone_dihedrals
from openmm_arbg.pretrained import load_reference, pretrained_path
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.analysis.free_energy import basin_free_energy_from_chain, basin_free_energy_from_weights
from openmm_arbg.sampling.importance import importance_sample
from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum

ms = alanine_dipeptide_vacuum()
thermo = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
model = ArBG.load(pretrained_path("alanine_dipeptide_vacuum"), topology=ms.topology)

# 1. importance sampling
with ReducedPotential(thermo, n_workers=2) as u:
    result = importance_sample(model, u, 5000, seed=0)
print(result.summary())
basin = alanine_dipeptide_basins(*backbone_dihedrals(result.positions, ms.topology))
f, df = basin_free_energy_from_weights(result.log_weights, basin == 0, basin == 1, rng=0)
print(f"IS:   F(alpha_R) - F(beta) = {f:.2f} +- {df:.2f} kT")
f, df = basin_free_energy_from_weights(result.log_weights, basin < 2, basin == 2, rng=0)
ref = load_reference()["phi>0"]
print(f"IS:   F(phi>0) - F(phi<0) = {f:.2f} +- {df:.2f} kT; umbrella-sampling reference "
      f"{ref['free_energy_kT']:.2f} +- {ref['free_energy_error_kT']:.2f} kT")

# 2. the usual openmmtools script; the ArBGMove line is the only addition
np.random.seed(0)
move = mcmc.SequenceMove([
    mcmc.LangevinDynamicsMove(n_steps=50, timestep=1.0 * unit.femtosecond),
    ArBGMove(pretrained_path("alanine_dipeptide_vacuum"), n_attempts=10),
])
sampler = mcmc.MCMCSampler(thermo, states.SamplerState(ms.positions), move)
context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
frames = []
for _ in range(300):
    sampler.run(1, context_cache=context_cache)
    frames.append(sampler.sampler_state.positions.value_in_unit(unit.nanometer))
arbg_move = move.move_list[1]
print(f"ArBGMove acceptance {100 * arbg_move.acceptance_rate:.1f}% of {arbg_move.n_proposed}")
basin = alanine_dipeptide_basins(*backbone_dihedrals(np.array(frames), ms.topology))
f, df = basin_free_energy_from_chain(basin == 0, basin == 1)
f2, df2 = basin_free_energy_from_chain(basin < 2, basin == 2)
print(f"MCMC: F(phi>0) - F(phi<0) = {f2:.2f} +- {df2:.2f} kT")
print(f"MCMC: F(alpha_R) - F(beta) = {f:.2f} +- {df:.2f} kT; populations "
      + ", ".join(f"{name} {100 * np.mean(basin == k):.1f}%" for k, name in enumerate(BASINS)))
