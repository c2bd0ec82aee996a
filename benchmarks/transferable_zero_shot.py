"""Zero-shot transferable model against single-molecule models on held-out peptides (issue 15).

For each held-out peptide (an ``arbg md`` folder whose sequence is not in the transferable
model's training list), this script:

1. builds the transferable model's ArBG of that peptide (no training step) and measures the
   ArBG paper's metrics against the peptide's MD: importance-sampling ESS/N and Pareto k at
   ``--n`` proposals, E-W2 (kT) and T-W2 (rad, all backbone dihedrals) after resampling, the
   fraction of wrong-handed proposals, the acceptance of an independence Metropolis-Hastings
   chain (what ``ArBGMove`` without Langevin steps accepts) run over the same proposals, and the
   MD frames' mean negative log density under the model (nats per molecule: the cross-entropy,
   whose differences between models of one peptide are differences of KL(MD || model), with the
   standard error of a mean over 1 000 correlated frames rather than of an ESS of a few);
2. trains a single-molecule model of the same network size on that peptide's own MD for
   ``--baseline-minutes`` (the transferable model's training time, for equal wall time) and
   measures the same numbers.

Every number comes from fresh proposals and exact weights; the MD is the reference for E-W2 and
T-W2. Prints a markdown table and writes ``results.json`` to ``--output``.

    python benchmarks/transferable_zero_shot.py --model transferable/model.safetensors \\
        --md md_T md_Q md_AT --baseline-minutes 12 --n 10000 --output zero_shot
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import openmm_arbg  # noqa: E402,F401  (before openmmtools: silences pymbar's banner)


def independence_acceptance(log_w, rng):
    """Acceptance rate of an independence MH chain whose proposals are the i.i.d. draws with
    log weights ``log_w`` (in order), started at the first finite one."""
    finite = np.flatnonzero(np.isfinite(log_w))
    if len(finite) == 0:
        return 0.0
    current, accepted = log_w[finite[0]], 0
    for lw in log_w[finite[0] + 1:]:
        if np.isfinite(lw) and np.log(rng.random()) < lw - current:
            current, accepted = lw, accepted + 1
    return accepted / max(1, len(log_w) - finite[0] - 1)


def peptide_md(folder, stride=1):
    """Sequence, mdtraj topology and frames (nm) of an ``arbg md`` folder of a capped peptide."""
    import mdtraj

    from openmm_arbg.cli.train_transferable import md_files
    from openmm_arbg.molecule.topology import MolecularGraph
    from openmm_arbg.training import load_trajectories
    from openmm_arbg.transferable import peptide_sequence

    traj, top = md_files(folder)
    topology = mdtraj.load_topology(top)
    return peptide_sequence(MolecularGraph.from_topology(topology)), topology, load_trajectories([traj], top, stride=stride)


def metrics(model, ref, ms, n, seed, lag):
    from openmm_arbg.analysis.evaluation import evaluate
    from openmm_arbg.sampling.energies import ReducedPotential

    t0 = time.time()
    import openmm.unit as unit

    with ReducedPotential(ms.system, temperature=ms.temperature.value_in_unit(unit.kelvin)) as u:
        m = evaluate(model, ref, u, n, seed=seed, lag=lag)
    r = m["result"]
    log_q_md = model.log_prob(ref)  # nats; its mean is minus the cross-entropy of the MD under the model
    return dict(md_nll=float(-log_q_md.mean()), md_outside_support=int((~np.isfinite(log_q_md)).sum()),
                ess_fraction=float(r.ess_fraction), pareto_k=float(r.pareto_k), e_w2=float(m["e_w2"]),
                t_w2=float(m["t_w2"]), wrong_handed=float(m.get("wrong_handed_fraction", np.nan)),
                acceptance=independence_acceptance(r.log_weights, np.random.default_rng(seed)),
                seconds=round(time.time() - t0, 1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="transferable model file")
    p.add_argument("--md", nargs="+", required=True, help="arbg md folders of held-out peptides")
    p.add_argument("--n", type=int, default=10000, help="proposals per model and peptide")
    p.add_argument("--baseline-minutes", type=float, default=0.0, help="training time of each single-molecule model "
                   "(0: no baseline)")
    p.add_argument("--single-models", nargs="*", default=[], help="single-molecule models already trained on held-out "
                   "peptides' MD (arbg train ... --time-budget-s), matched by sequence, instead of --baseline-minutes")
    p.add_argument("--no-zero-shot", action="store_true", help="measure only the single-molecule models (the "
                   "transferable model still names the training sequences that no --md folder may be)")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--lag", type=int, default=20, help="TICA lag of TICA-W2, in reference frames (shorter than the "
                   "reference; default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device of the networks (cpu, cuda)")
    p.add_argument("--output", default="zero_shot")
    args = p.parse_args(argv)

    import torch

    from openmm_arbg import ArBG
    from openmm_arbg.simulation.systems import capped_peptide
    from openmm_arbg.training import Trainer
    from openmm_arbg.transferable import TransferableArBG, peptide_sequence

    torch.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    transferable = TransferableArBG.load(args.model, device=args.device)
    singles = {}
    for path in args.single_models:
        m = ArBG.load(path, device=args.device)
        singles[peptide_sequence(m.graph)] = m
    net = transferable.network.cfg
    rows = []
    for folder in args.md:
        seq, topology, ref = peptide_md(folder, args.stride)
        if seq in transferable.sequences:
            raise SystemExit(f"{folder}: {seq} is a training sequence of the transferable model, not a held-out one")
        ms = capped_peptide(seq)
        row = dict(sequence=seq, n_reference=len(ref))
        if not args.no_zero_shot:
            zero = transferable.for_topology(topology, ref[0])
            row["zero_shot"] = metrics(zero, ref, ms, args.n, args.seed, args.lag)
        if seq in singles:
            trained = singles[seq].metadata.get("training", {})
            row["single_molecule"] = dict(metrics(singles[seq], ref, ms, args.n, args.seed, args.lag), steps=trained.get("step"),
                                          minutes=round((trained.get("config", {}).get("time_budget_s") or
                                                         trained.get("config", {}).get("max_time_s") or 0) / 60, 1))
        elif args.baseline_minutes > 0:
            single = ArBG.from_data(topology, ref, n_bins=transferable.n_bins,
                                    network=dict(n_layer=net.n_layer, n_head=net.n_head, d_model=net.d_model),
                                    seed=args.seed).to(args.device)
            trainer = Trainer(single, ref, dict(n_steps=100000, time_budget_s=60 * args.baseline_minutes, eval_interval=100,
                                                batch_size=64, learning_rate=2e-3, warmup_steps=100, seed=args.seed),
                              output_dir=os.path.join(args.output, f"single_{seq}"), resume=False, progress=False)
            trainer.fit()
            row["single_molecule"] = dict(metrics(single, ref, ms, args.n, args.seed, args.lag), steps=trainer.step,
                                          minutes=args.baseline_minutes)
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(dict(command=" ".join(sys.argv), model=args.model, training_sequences=transferable.sequences,
                       rows=rows), f, indent=1)
    print("\n| peptide | model | MD NLL (nats) | ESS/N at %d | Pareto k | E-W2 (kT) | T-W2 (rad) | independence-MH acceptance | wrong-handed |" % args.n)
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        for name in ("zero_shot", "single_molecule"):
            if name in row:
                m = row[name]
                print(f"| {row['sequence']} | {name.replace('_', ' ')} | {m['md_nll']:.1f} | {100 * m['ess_fraction']:.2f} % | {m['pareto_k']:.2f} | "
                      f"{m['e_w2']:.2f} | {m['t_w2']:.2f} | {100 * m['acceptance']:.1f} % | {100 * m['wrong_handed']:.2f} % |")


if __name__ == "__main__":
    main()
