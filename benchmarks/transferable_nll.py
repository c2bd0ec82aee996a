"""The MD's negative log-likelihood under two transferable models, paired frame by frame (issue 15).

For each ``arbg md`` folder, both models' ArBGs of that peptide (zero-shot: no training step)
score every MD frame; the table gives each model's mean ``-log q(x)`` (nats per molecule, the
cross-entropy of the MD under the model) and the mean of the per-frame difference with its
standard error (``chain_mean_error``: pymbar's statistical inefficiency of the difference, since
MD frames are correlated). Between two models of one peptide the difference is the difference of
KL(MD || model): a comparison whose error is a fraction of a nat where ESS/N at Pareto k > 1 counts
a few proposals. Lower is better.

    python benchmarks/transferable_nll.py --models new/model.safetensors old/model.safetensors \\
        --md heldout/md_AT heldout/md_KE
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import openmm_arbg  # noqa: E402,F401  (before pymbar: silences its banner)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs=2, required=True, metavar=("MODEL", "OTHER"), help="two transferable model files")
    p.add_argument("--md", nargs="+", required=True, help="arbg md folders (topology.pdb beside the trajectory)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from openmm_arbg.analysis.free_energy import chain_mean_error
    from openmm_arbg.transferable import TransferableArBG
    from transferable_zero_shot import peptide_md

    torch.set_num_threads(args.threads)
    new, old = (TransferableArBG.load(path) for path in args.models)
    print(f"MODEL = {args.models[0]}, OTHER = {args.models[1]}")
    print("| peptide | in MODEL's training | in OTHER's training | MD NLL, MODEL (nats) | MD NLL, OTHER | MODEL - OTHER (± s.e.) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for folder in args.md:
        seq, topology, ref = peptide_md(folder)
        log_q = [m.for_topology(topology, ref[0]).log_prob(ref) for m in (new, old)]
        bad = [int((~np.isfinite(lq)).sum()) for lq in log_q]
        if any(bad):
            print(f"| {seq} | frames outside the support: {bad[0]} and {bad[1]} (NLL infinite) | | | | |")
            continue
        d = log_q[1] - log_q[0]  # per-frame NLL of MODEL minus OTHER's
        trained = ["yes" if seq in m.sequences else "no" for m in (new, old)]
        print(f"| {seq} | {trained[0]} | {trained[1]} | {-log_q[0].mean():.1f} | {-log_q[1].mean():.1f} | "
              f"{d.mean():+.1f} ± {chain_mean_error(d):.1f} |", flush=True)


if __name__ == "__main__":
    main()
