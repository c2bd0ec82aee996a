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

A reference that the MD's length leaves without the state can be completed by strata:
``--state-reference FILES`` is MD started inside the state (only its frames inside the state are
used), and ``--state-population P ...`` (%) are independent estimates of the state's population
(umbrella sampling, metadynamics). For each P the reference is the MD's frames outside the state
with total weight 1 - P and the state's frames with weight P, and E-W2 is the exact 1-D optimal
transport between the resampled proposals and that weighted reference (POT's ``emd2_1d``).
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
    p.add_argument("--state-reference", nargs="+", default=None, help="MD started inside the state")
    p.add_argument("--state-population", type=float, nargs="+", default=None,
                   help="independent estimates of the state's population (%%) that weigh --state-reference")
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
    x_in = load_trajectories(args.state_reference, args.topology) if args.state_reference else None
    ms = build_system(args.system)
    with ReducedPotential(ms.system, temperature=ms.temperature.value_in_unit(unit.kelvin), n_workers=1) as rp:
        u_ref = rp(ref)
        u_in = None if x_in is None else rp(x_in)
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
    if x_in is None:
        return
    import ot

    kept = np.asarray(state(x_in), bool)
    u_in = u_in[kept]
    in_picks = picks[inside[picks]]
    print(f"MD started inside the state: {kept.sum()} of {len(kept)} frames inside; mean reduced energy {u_in.mean():.3f} kT "
          f"(weighed proposals inside: {np.sum(w[inside] * u[inside]) / w[inside].sum():.3f})")
    print(f"E-W2 inside the state, resampled proposals against those frames: {energy_w2(u[in_picks], u_in):.3f} kT")
    outside_u = u_ref[~ref_inside]
    for pct in args.state_population or ():
        P = pct / 100.0
        values = np.concatenate([outside_u, u_in])
        mass = np.concatenate([np.full(len(outside_u), (1 - P) / len(outside_u)), np.full(len(u_in), P / len(u_in))])
        value = ot.emd2_1d(u[picks], values, np.full(len(picks), 1.0 / len(picks)), mass, metric="sqeuclidean")
        print(f"E-W2 against the reference by strata, the state at {pct:g} %: {np.sqrt(value):.3f} kT")


if __name__ == "__main__":
    main()
