"""Transitions across phi = 0 per energy evaluation: ArBGMove + Langevin against Langevin MD,
alanine dipeptide vacuum, 300 K, Reference platform, the shipped model.

Usage:
    python benchmarks/phi_crossings.py --md-steps 2000000 --iterations 2000 --attempts 25 --langevin-steps 25

Each ArBGMove attempt costs one energy evaluation, each Langevin step one force evaluation. MD
frames are read every --observe steps; the mixed chain is observed after every iteration.
"""

import argparse
import time

from openmm_arbg.analysis.observables import backbone_dihedrals, phi_sign_changes  # first: it silences pymbar's import banner, which openmmtools would print

import numpy as np
import openmm
import openmm.unit as unit
import torch
from openmmtools import states

from openmm_arbg.pretrained import pretrained_path
from openmm_arbg.sampling.chain import run_chain
from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--md-steps", type=int, default=2_000_000)
    p.add_argument("--observe", type=int, default=50, help="MD steps between observations")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--attempts", type=int, default=25)
    p.add_argument("--langevin-steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    ms = alanine_dipeptide_vacuum()
    thermo = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
    platform = openmm.Platform.getPlatformByName("Reference")

    # Langevin MD
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(args.seed + 1)
    context = openmm.Context(ms.system, integrator, platform)
    context.setPositions(ms.positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, args.seed + 2)
    t0 = time.time()
    xs = []
    for _ in range(args.md_steps // args.observe):
        integrator.step(args.observe)
        xs.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    t_md = time.time() - t0
    phi_md, psi_md = backbone_dihedrals(np.array(xs), ms.topology)
    n_md = phi_sign_changes(phi_md)

    # ArBGMove + Langevin
    phi = {"phi": lambda x: backbone_dihedrals(x, ms.topology)[0][:, 0]}
    chain = run_chain(args.model or pretrained_path("alanine_dipeptide_vacuum"), thermo, ms.positions, args.iterations,
                      n_attempts=args.attempts, langevin_steps=args.langevin_steps, buffer_size=2000, platform="Reference",
                      observables=phi, keep_positions=False, seed=args.seed)
    t_mc = chain.wall_time_s
    phi_mc = chain.observables["phi"]
    n_mc = phi_sign_changes(phi_mc)
    evals_mc = chain.n_energy_evaluations

    rate_md, rate_mc = n_md / args.md_steps, n_mc / evals_mc
    print("| sampler | energy evaluations | wall s | phi=0 crossings | per 10^6 evaluations | per wall second | P(phi>0) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, ev, t, n, phi in (("Langevin MD", args.md_steps, t_md, n_md, phi_md), ("ArBGMove + Langevin", evals_mc, t_mc, n_mc, phi_mc)):
        print(f"| {name} | {ev:,} | {t:.0f} | {n} | {1e6 * n / ev:.1f} | {n / t:.3f} | {np.mean(np.asarray(phi) > 0):.4f} |")
    per_eval = rate_mc / rate_md if n_md else float("inf")
    per_second = (n_mc / t_mc) / (n_md / t_md) if n_md else float("inf")
    print(f"\nratio ArBG/MD: {per_eval:.0f}x per energy evaluation, {per_second:.1f}x per wall second; "
          f"ArBGMove acceptance {100 * chain.acceptance_rate:.1f}% of {chain.statistics['n_proposed']}")


if __name__ == "__main__":
    main()
