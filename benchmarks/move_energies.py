"""ArBGMove's attempt energies in worker processes against one Context (issue 13).

For each system: an untrained model with bins fitted to a few ps of MD (what a proposal costs to
evaluate does not depend on how good it is), then ``--iterations`` applications of
``ArBGMove(n_attempts=...)`` with ``n_workers`` 1 (the sampler's Context, on the platform the
package's speed test picks) and 2 (a worker pool on that platform), from the same seed. Reported:
wall time per attempt in the energies and in the whole move, and the ratio, all in one run.

Usage:
    python benchmarks/move_energies.py --systems alanine_dipeptide_vacuum peptide:AAA --attempts 25 --iterations 40
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def untrained_model(ms, temperature, directory):
    from openmm_arbg import ArBG
    from openmm_arbg.simulation.md import run_md

    frames = run_md(ms, os.path.join(directory, "md"), n_steps=5000, report_interval=25, temperature=temperature,
                    equilibration_steps=1000, progress=False, seed=1)
    model = ArBG.from_data(ms.topology, frames.xyz.astype(float), n_bins=64,
                           network=dict(n_layer=2, n_head=2, d_model=32), seed=0)
    path = os.path.join(directory, "model.safetensors")
    model.save(path)
    return ArBG.load(path)


def time_move(model, thermo, positions, platform, n_attempts, n_iterations, n_workers):
    import openmm
    from openmmtools import cache, states

    from openmm_arbg.sampling.mcmc import ArBGMove

    np.random.seed(0)
    move = ArBGMove(model, n_attempts=n_attempts, buffer_size=n_attempts * n_iterations, n_workers=n_workers)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName(platform))
    sampler_state = states.SamplerState(positions)
    spent = [0.0]
    energies = move._proposal_energies

    def timed(*args):
        t0 = time.perf_counter()
        out = energies(*args)
        spent[0] += time.perf_counter() - t0
        return out

    move._proposal_energies = timed
    move.apply(thermo, sampler_state, context_cache)  # warm-up: context, pool, proposal buffer
    spent[0] = 0.0
    t0 = time.perf_counter()
    for _ in range(n_iterations):
        move.apply(thermo, sampler_state, context_cache)
    total = time.perf_counter() - t0
    for pool in move._pools.values():
        pool.close()
    n = n_iterations * n_attempts
    return spent[0] / n, total / n, move.acceptance_rate


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", nargs="+", default=["alanine_dipeptide_vacuum", "peptide:AAA"])
    p.add_argument("--attempts", type=int, default=25)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    import openmm.unit as unit
    from openmmtools import states

    from openmm_arbg.physics import default_platform
    from openmm_arbg.simulation.systems import build_system

    print(f"| system | platform | energies per attempt, 1 Context (ms) | {args.workers} workers (ms) | speed-up | "
          f"move per attempt, 1 Context (ms) | {args.workers} workers (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.systems:
        ms = build_system(name)
        T = ms.temperature.value_in_unit(unit.kelvin)
        with tempfile.TemporaryDirectory() as tmp:
            model = untrained_model(ms, T, tmp)
            thermo = states.ThermodynamicState(ms.system, T * unit.kelvin)
            platform = default_platform(ms.system.getNumParticles(), ms.system, ms.positions)
            one = time_move(model, thermo, ms.positions, platform, args.attempts, args.iterations, 1)
            many = time_move(model, thermo, ms.positions, platform, args.attempts, args.iterations, args.workers)
        print(f"| {name} | {platform} | {1e3 * one[0]:.3f} | {1e3 * many[0]:.3f} | {one[0] / many[0]:.2f}x | "
              f"{1e3 * one[1]:.3f} | {1e3 * many[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
