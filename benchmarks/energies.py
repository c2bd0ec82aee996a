"""Reduced potentials per second: ReducedPotential (worker processes) against a plain loop over
one OpenMM Context, alanine dipeptide vacuum, Reference platform.

Usage:
    python benchmarks/energies.py --n 20000 --workers 1 2
"""

import argparse
import time

import numpy as np
import openmm
import openmm.unit as unit

from openmm_arbg.physics import kT_kJ_per_mol
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum


def plain_loop(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))
    beta = 1.0 / kT_kJ_per_mol(300.0)
    out = np.empty(len(positions))
    for i, x in enumerate(positions):
        context.setPositions(x * unit.nanometer)
        out[i] = beta * context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    ms = alanine_dipeptide_vacuum()
    rng = np.random.default_rng(0)
    x = ms.positions_nm()[None] + 0.01 * rng.standard_normal((args.n, ms.n_atoms, 3))
    t0 = time.perf_counter()
    ref = plain_loop(ms.system, x)
    t_ref = time.perf_counter() - t0
    rows = [("plain loop, one Context", args.n / t_ref, 1.0)]
    for w in args.workers:
        with ReducedPotential(ms.system, temperature=300.0, n_workers=w) as u:
            u(x[:100])  # start the workers
            t0 = time.perf_counter()
            out = u(x)
            t = time.perf_counter() - t0
        assert np.allclose(out, ref, rtol=1e-9)
        rows.append((f"ReducedPotential, n_workers={w}", args.n / t, t_ref / t))
    print("| method | conformations/s | speed-up vs plain loop |")
    print("| --- | --- | --- |")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
