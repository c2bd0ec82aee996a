"""Where an E-W2 comes from: the weighed proposals of ``arbg sample --output`` against reference MD,
split by one state (for example every residue's alpha_L, which MD of a few ns hardly visits).

Usage:
    python benchmarks/ew2_by_state.py --system peptide:AAA --proposals proposals.dcd \\
        --reference ref1.dcd ref2.dcd --topology top.pdb --state "phi2 > 0 or phi3 > 0 or phi4 > 0" [--seed 11]

Prints the state's population by the proposals' weights and in the reference frames, the mean
reduced energy (kT) inside and outside it on both sides, and E-W2 (kT) of the resampled proposals
(``arbg evaluate``'s resampling: systematic, ``--seed``) against the reference, with every proposal
and with the state's proposals left out on both sides. Leaving a state out is a diagnosis, not
the paper's metric: it says how far the two sides agree where the reference has its frames.
"""

import argparse

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", required=True)
    p.add_argument("--proposals", required=True, help="arbg sample --output file (its .progress/result.npz beside it)")
    p.add_argument("--reference", required=True, nargs="+")
    p.add_argument("--topology", required=True)
    p.add_argument("--state", required=True, help="a state expression, as in arbg free-energy --state (without a name)")
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)

    import mdtraj
    import openmm.unit as unit

    from openmm_arbg.analysis.evaluation import energy_w2
    from openmm_arbg.analysis.states import StateExpression
    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.sampling.importance import normalized_weights, resample
    from openmm_arbg.simulation.systems import build_system
    from openmm_arbg.training import load_trajectories
    from openmm_arbg.utils import load_trajectory

    top = mdtraj.load_topology(args.topology)
    with np.load(args.proposals + ".progress/result.npz", allow_pickle=False) as z:
        log_w, u = z["log_weights"], z["reduced_potentials"]
    x = load_trajectory(args.proposals, top=top).xyz
    ref = load_trajectories(args.reference, args.topology)
    ms = build_system(args.system)
    with ReducedPotential(ms.system, temperature=ms.temperature.value_in_unit(unit.kelvin), n_workers=1) as rp:
        u_ref = rp(ref)
    state = StateExpression(args.state, top)
    inside, ref_inside = np.asarray(state(x), bool), np.asarray(state(ref), bool)
    w = normalized_weights(log_w)
    picks = resample(log_w, len(log_w), rng=args.seed)
    out_picks = picks[~inside[picks]]
    print(f"{args.proposals} ({len(u)} proposals) against {len(ref)} reference frames, state: {args.state}")
    print("| | weighed proposals | reference MD |")
    print("| --- | --- | --- |")
    print(f"| population of the state | {100 * w[inside].sum():.2f} % | {100 * ref_inside.mean():.3f} % ({ref_inside.sum()} frames) |")
    for label, mine, theirs in (("mean reduced energy inside (kT)", inside, ref_inside), ("outside", ~inside, ~ref_inside)):
        a = np.sum(w[mine] * u[mine]) / w[mine].sum() if w[mine].sum() > 0 else float("nan")
        b = u_ref[theirs].mean() if theirs.any() else float("nan")
        print(f"| {label} | {a:.3f} | {b:.3f} |")
    print(f"| mean reduced energy, all (kT) | {np.sum(w * u):.3f} | {u_ref.mean():.3f} |")
    print(f"E-W2, every proposal: {energy_w2(u[picks], u_ref):.3f} kT")
    print(f"E-W2, the state left out on both sides: {energy_w2(u[out_picks], u_ref[~ref_inside]):.3f} kT "
          f"({len(out_picks)} of {len(picks)} resampled)")


if __name__ == "__main__":
    main()
