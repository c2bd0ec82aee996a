"""Sample alanine dipeptide (vacuum, 300 K) with the shipped ArBG: importance sampling, then a
chain of ArBGMove + Langevin dynamics in an openmmtools MCMCSampler.

    python examples/alanine_dipeptide.py

A few minutes on 2 CPU cores. The same as `arbg demo` without the MD and training steps.
``run_chain`` is the usual openmmtools loop,

    move = SequenceMove([LangevinDynamicsMove(n_steps=50), ArBGMove(model_path, n_attempts=10)])
    sampler = MCMCSampler(thermodynamic_state, SamplerState(positions), move)
    for _ in range(300):
        sampler.run(1, context_cache=context_cache)

which records the state after every iteration and the move's statistics.
"""

import openmm.unit as unit
from openmmtools import states

from openmm_arbg import ArBG
from openmm_arbg.analysis.diagnostics import warning_lines
from openmm_arbg.analysis.free_energy import alanine_dipeptide_analysis
from openmm_arbg.pretrained import load_reference, pretrained_path
from openmm_arbg.sampling.chain import run_chain
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.sampling.importance import importance_sample
from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum

ms = alanine_dipeptide_vacuum()
thermo = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
model = ArBG.load(pretrained_path("alanine_dipeptide_vacuum"), topology=ms.topology)
ref = load_reference()["phi>0"]
print(f"umbrella-sampling reference: F(phi>0) - F(phi<0) = {ref['free_energy_kT']:.2f} +- {ref['free_energy_error_kT']:.2f} kT")

# 1. importance sampling
with ReducedPotential(thermo, n_workers=2) as u:
    result = importance_sample(model, u, 5000, seed=0)
print(result.summary())
for line in warning_lines(result):
    print("warning:", line)
weighted = alanine_dipeptide_analysis(result.positions, ms.topology, result.log_weights, rng=0)

# 2. ArBGMove + Langevin in an openmmtools MCMCSampler
chain = run_chain(model, thermo, ms.positions, 300, n_attempts=10, langevin_steps=50, platform="Reference", seed=0)
print(chain.summary())
for line in warning_lines(chain):
    print("warning:", line)
chained = alanine_dipeptide_analysis(chain.positions, ms.topology)

for label, analysis in (("IS", weighted), ("MCMC", chained)):
    for name, (f, df) in analysis["free_energies"].items():
        print(f"{label}: {name} = {f:.2f} +- {df:.2f} kT")
    print(f"{label}: populations " + ", ".join(f"{name} {100 * p:.1f}%" for name, (p, _) in analysis["populations"].items()))
