"""ArBGMove + Langevin chain against plain Langevin MD on a peptide, at equal energy evaluations and
equal wall time, on its slowest backbone observable (issue 10, item 6).

The observable is the slowest of sin and cos of every backbone phi/psi: for each series the
statistical inefficiency g (pymbar) gives n / g effective samples, and the smallest over the series
counts. MD: existing trajectories of the package's MD (``arbg md`` or ``benchmarks/peptide_md.py``;
the steps per frame are read from each run's ``settings.json``), every run analysed on its own and
the effective samples summed; its cost per step is timed here on the same platform and threads.
Chain: ``run_chain`` from the model's lowest-energy draw of 64, observed after every iteration.

    OPENMM_CPU_THREADS=1 python benchmarks/peptide_chain_vs_md.py --model aaa/model.safetensors \\
        --md 'md/run_2*/trajectory.dcd' --iterations 300 --attempts 25 --langevin-steps 25 --threads 1
"""

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def slowest_effective_samples(angles):
    """min over the sin/cos series of n / g, and that g."""
    from pymbar import timeseries

    series = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    n = len(series)
    g = max(timeseries.statistical_inefficiency(series[:, c]) if np.ptp(series[:, c]) > 0 else n for c in range(series.shape[1]))
    return n / g, g


def md_step_seconds(ms, temperature, n_steps, platform):
    import openmm
    import openmm.unit as unit

    from openmm_arbg.physics import platform_properties

    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    context = openmm.Context(ms.system, integrator, openmm.Platform.getPlatformByName(platform), platform_properties(platform))
    context.setPositions(ms.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=100)
    integrator.step(200)
    t0 = time.perf_counter()
    for _ in range(n_steps // 1000):  # frames saved every 1000 steps, as the MD being compared
        integrator.step(1000)
        context.getState(getPositions=True)
    return (time.perf_counter() - t0) / n_steps


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--system", default=None, help="target (default: the model's molecule's built-in system)")
    p.add_argument("--md", nargs="+", required=True, help="MD trajectories (globs); settings.json beside each")
    p.add_argument("--topology", default=None, help="of the MD (default: topology.pdb beside each trajectory)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--attempts", type=int, default=25)
    p.add_argument("--langevin-steps", type=int, default=25)
    p.add_argument("--burn-in", type=float, default=0.1, help="fraction of chain iterations discarded")
    p.add_argument("--md-timing-steps", type=int, default=20000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from openmm_arbg.utils import quiet_pymbar

    quiet_pymbar()
    import mdtraj
    import openmm.unit as unit
    from openmmtools.states import ThermodynamicState

    from openmm_arbg import ArBG
    from openmm_arbg.analysis.observables import backbone_dihedral_indices
    from openmm_arbg.cli.common import system_for_model
    from openmm_arbg.physics import default_platform
    from openmm_arbg.sampling.chain import run_chain
    from openmm_arbg.sampling.energies import ReducedPotential

    model = ArBG.load(args.model)
    ms = system_for_model(model, args.system)
    T = ms.temperature.value_in_unit(unit.kelvin)
    phi, psi = backbone_dihedral_indices(model.topology)
    quads = np.concatenate([phi, psi])
    platform = default_platform(ms.system.getNumParticles(), ms.system, ms.positions)

    # MD: effective samples per step from the trajectories, seconds per step timed here
    files = sorted(f for pattern in args.md for f in glob.glob(pattern))
    if not files:
        raise SystemExit(f"no trajectory matches {args.md}")
    md_neff, md_steps, gs = 0.0, 0, []
    for f in files:
        folder = os.path.dirname(f)
        with open(os.path.join(folder, "settings.json")) as fh:
            interval = int(json.load(fh)["report_interval"])
        traj = mdtraj.load(f, top=args.topology or os.path.join(folder, "topology.pdb"))
        n_eff, g = slowest_effective_samples(mdtraj.compute_dihedrals(traj, quads))
        md_neff, md_steps = md_neff + n_eff, md_steps + len(traj) * interval
        gs.append(g * interval)
    step_s = md_step_seconds(ms, T, args.md_timing_steps, platform)

    # chain
    start, _ = model.sample(64, seed=args.seed)
    with ReducedPotential(ms.system, temperature=T) as u:
        e = np.where(model.check_stereo(start), u(start), np.inf)
    x0 = start[int(np.argmin(e))]
    chain = run_chain(model, ThermodynamicState(ms.system, T * unit.kelvin), x0, args.iterations, n_attempts=args.attempts,
                      langevin_steps=args.langevin_steps, platform=platform, seed=args.seed)
    xs = chain.positions[int(args.burn_in * args.iterations):]
    chain_neff, chain_g = slowest_effective_samples(mdtraj.compute_dihedrals(mdtraj.Trajectory(xs, model.topology), quads))
    chain_evals = len(xs) * (args.attempts + args.langevin_steps)
    chain_s = chain.wall_time_s * len(xs) / args.iterations

    print(f"{model}; {ms.name} at {T:g} K on {platform}; {len(quads)} backbone dihedrals; torch threads {args.threads}, "
          f"OPENMM_CPU_THREADS={os.environ.get('OPENMM_CPU_THREADS', 'unset')}")
    print(f"MD: {len(files)} runs, {md_steps:,} steps, g of the slowest series {np.median(gs):,.0f} steps (median over runs), "
          f"{1e6 * step_s:.0f} us per step")
    print(f"chain: {len(xs)} iterations after burn-in, acceptance {100 * chain.acceptance_rate:.2f} %, g {chain_g:.1f} iterations, "
          f"{1e3 * chain_s / len(xs):.1f} ms per iteration")
    print("\n| sampler | energy evaluations | wall s | backbone n_eff | n_eff per 10^6 evaluations | n_eff per wall s |")
    print("| --- | --- | --- | --- | --- | --- |")
    md_wall = md_steps * step_s
    print(f"| Langevin MD | {md_steps:,} | {md_wall:,.0f} (timed per step) | {md_neff:.1f} | {1e6 * md_neff / md_steps:,.1f} | "
          f"{md_neff / md_wall:.3f} |")
    print(f"| ArBGMove x {args.attempts} + Langevin x {args.langevin_steps} | {chain_evals:,} | {chain_s:,.0f} | {chain_neff:.1f} | "
          f"{1e6 * chain_neff / chain_evals:,.1f} | {chain_neff / chain_s:.3f} |")
    print(f"ratio chain / MD: per evaluation {(chain_neff / chain_evals) / (md_neff / md_steps):.1f}x, "
          f"per wall second {(chain_neff / chain_s) / (md_neff / md_wall):.1f}x")


if __name__ == "__main__":
    main()
