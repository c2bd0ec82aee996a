"""The floor of E-W2, T-W2 and TICA-W2 for a reference trajectory: the same metrics between the
reference and independent MD of the same size. A model whose metrics reach this floor is as close
to the reference as exact Boltzmann samples of that size can show.

Usage:
    python benchmarks/metric_floor.py --system peptide:AAA --reference ref.dcd --other other.dcd \\
        --topology top.pdb [--draws 3] [--lag 100]

Prints, for ``draws`` random subsets of ``other`` with as many frames as the reference, and for
its first contiguous block of that length, E-W2 (kT), T-W2 (rad, every backbone phi and psi) and
TICA-W2 (lag in reference frames), with ``arbg evaluate``'s functions (``energy_w2``, ``structural_w2``).

``--exact-n N`` adds the floor that no reference of this size goes below: E-W2 between N and as many
frames as the reference drawn independently (with replacement) from the reference's own energies, 20
times. It is what exact, independent samples score against a reference of independent frames; 10^4
against 10^4 for Ace-AAA-Nme at 310 K gives about 0.2 kT (docs/benchmarks.md section 28);
``--exact-reference-n M`` sets the reference's side to M draws; ``--exact-reference-n independent``
to the reference's independent frames: each run's frame count over the statistical inefficiency of
its reduced energies (pymbar), printed for every run. ``--reference A B C`` pools independent runs.
Without ``--other`` only this floor is computed.
"""

import argparse

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", required=True)
    p.add_argument("--reference", required=True, nargs="+", help="reference trajectory, or several independent runs")
    p.add_argument("--other", default=None, help="independent MD of the same system (at least as many frames)")
    p.add_argument("--topology", required=True)
    p.add_argument("--temperature", type=float, default=None, help="K (default: the system's)")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--lag", type=int, default=100)
    p.add_argument("--exact-n", type=int, default=0, metavar="N",
                   help="also the E-W2 of N independent draws from the reference's energies against as many independent "
                        "draws as the reference has frames (20 repeats)")
    p.add_argument("--exact-reference-n", default="0", metavar="M",
                   help="with --exact-n: M draws on the reference's side instead of its frame count (the floor of a "
                        "reference of M independent frames), or 'independent': the reference's frames over their "
                        "statistical inefficiency, run by run")
    args = p.parse_args(argv)
    if args.other is None and args.exact_n < 1:
        p.error("give --other (independent MD) or --exact-n N (or both)")
    if args.exact_reference_n != "independent" and not args.exact_reference_n.isdigit():
        p.error(f"--exact-reference-n takes a number of frames or 'independent'; got {args.exact_reference_n!r}")

    import openmm.unit as unit

    from openmm_arbg.analysis.evaluation import energy_w2, structural_w2
    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.simulation.systems import build_system
    from openmm_arbg.training import load_trajectories

    import mdtraj
    from pymbar import timeseries  # after openmm_arbg, which quiets its import banner

    ms = build_system(args.system)
    top = mdtraj.load_topology(args.topology)
    ref, lengths = load_trajectories(args.reference, args.topology, return_lengths=True)
    other = None if args.other is None else load_trajectories([args.other], args.topology)
    n = len(ref)
    if other is not None and len(other) < n:
        raise SystemExit(f"--other has {len(other)} frames, fewer than the reference's {n}")
    T = args.temperature or ms.temperature.value_in_unit(unit.kelvin)
    with ReducedPotential(ms.system, temperature=T, n_workers=1) as u:
        u_ref = u(ref)
        u_other = None if other is None else u(other)
    n_independent = 0.0
    for path, run_u in zip(args.reference, np.split(u_ref, np.cumsum(lengths)[:-1])):
        g = timeseries.statistical_inefficiency(run_u[np.isfinite(run_u)])
        n_independent += len(run_u) / g
        print(f"{path}: {len(run_u)} frames, statistical inefficiency of the reduced energy {g:.2f} "
              f"({len(run_u) / g:.0f} independent frames)")
    if len(lengths) > 1:
        print(f"pooled: {n} frames, {n_independent:.0f} independent")
    if args.exact_n:  # its own generator: the subsets below are the same with or without it
        exact_rng = np.random.default_rng(0)
        finite = u_ref[np.isfinite(u_ref)]
        m = int(round(n_independent)) if args.exact_reference_n == "independent" else int(args.exact_reference_n) or n
        w = [energy_w2(exact_rng.choice(finite, args.exact_n), exact_rng.choice(finite, m)) for _ in range(20)]
        print(f"exact independent samples: {args.exact_n} draws against {m} from the reference's {len(finite)} energies "
              f"(standard deviation {finite.std():.2f} kT): E-W2 {np.mean(w):.3f} +- {np.std(w):.3f} kT (20 repeats)")
    if other is None:
        return
    rng = np.random.default_rng(0)
    subsets = [(f"random {n} frames, draw {d}", np.sort(rng.choice(len(other), n, replace=False))) for d in range(args.draws)]
    subsets.append((f"first {n} contiguous frames", np.arange(n)))
    print(f"{args.other} against {' '.join(args.reference)} ({n} frames), {args.system} at {T:g} K")
    print("| independent MD | E-W2 (kT) | T-W2 (rad) | TICA-W2 |")
    print("| --- | --- | --- | --- |")
    for label, idx in subsets:
        w2 = structural_w2(ref, other[idx], top, lag=args.lag, max_points=n, lengths=lengths)
        print(f"| {label} | {energy_w2(u_other[idx], u_ref):.3f} | {w2['t_w2']:.3f} | {w2['tica_w2']:.3f} |")


if __name__ == "__main__":
    main()
