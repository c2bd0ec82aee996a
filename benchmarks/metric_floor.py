"""The floor of E-W2, T-W2 and TICA-W2 for a reference trajectory: the same metrics between the
reference and independent MD of the same size. A model whose metrics reach this floor is as close
to the reference as exact Boltzmann samples of that size can show.

Usage:
    python benchmarks/metric_floor.py --system peptide:AAA --reference ref.dcd --other other.dcd \\
        --topology top.pdb [--draws 3] [--lag 100]

Prints, for ``draws`` random subsets of ``other`` with as many frames as the reference, and for
its first contiguous block of that length, E-W2 (kT), T-W2 (rad, every backbone phi and psi) and
TICA-W2 (lag in reference frames), with ``arbg evaluate``'s functions (``energy_w2``, ``structural_w2``).
"""

import argparse

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--other", required=True, help="independent MD of the same system (at least as many frames)")
    p.add_argument("--topology", required=True)
    p.add_argument("--temperature", type=float, default=None, help="K (default: the system's)")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--lag", type=int, default=100)
    args = p.parse_args(argv)

    import openmm.unit as unit

    from openmm_arbg.analysis.evaluation import energy_w2, structural_w2
    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.simulation.systems import build_system
    from openmm_arbg.training import load_trajectories

    import mdtraj

    ms = build_system(args.system)
    top = mdtraj.load_topology(args.topology)
    ref = load_trajectories([args.reference], args.topology)
    other = load_trajectories([args.other], args.topology)
    n = len(ref)
    if len(other) < n:
        raise SystemExit(f"--other has {len(other)} frames, fewer than the reference's {n}")
    T = args.temperature or ms.temperature.value_in_unit(unit.kelvin)
    with ReducedPotential(ms.system, temperature=T, n_workers=1) as u:
        u_ref, u_other = u(ref), u(other)
    rng = np.random.default_rng(0)
    subsets = [(f"random {n} frames, draw {d}", np.sort(rng.choice(len(other), n, replace=False))) for d in range(args.draws)]
    subsets.append((f"first {n} contiguous frames", np.arange(n)))
    print(f"{args.other} against {args.reference} ({n} frames), {args.system} at {T:g} K")
    print("| independent MD | E-W2 (kT) | T-W2 (rad) | TICA-W2 |")
    print("| --- | --- | --- | --- |")
    for label, idx in subsets:
        w2 = structural_w2(ref, other[idx], top, lag=args.lag, max_points=n)
        print(f"| {label} | {energy_w2(u_other[idx], u_ref):.3f} | {w2['t_w2']:.3f} | {w2['tica_w2']:.3f} |")


if __name__ == "__main__":
    main()
