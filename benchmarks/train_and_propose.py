"""Train an ArBG on MD runs of a molecule, then draw proposals and their reduced potentials:
the expensive half of the Table 1 evaluation, meant for a GPU machine (its CPU cores compute the
energies). ``benchmarks/table1_report.py`` turns the output into the metrics.

    python benchmarks/train_and_propose.py --system peptide:AAA --trajectories md/run_2*/trajectory.dcd \\
        --topology md/run_20/topology.pdb --output aaa_gpu --time-budget-s 300 --device cuda \\
        --n-layer 4 --d-model 192 --n-head 8 --dropout 0.1 --n-is 10000 --n-eval 200000 --energy-workers 15

Writes ``output/model.safetensors``, ``training_log.csv``, ``is.npz`` (``n_is`` proposals: log q,
reduced potential u in kT, right-handed mask) and ``eval.npz`` (``n_eval`` proposals: log q, u,
right-handed mask, and ``n_resample`` configurations resampled from the importance weights, nm).
"""

import argparse
import glob
import os
import subprocess
import sys
import time

import numpy as np


def _energies(args):
    """Child process (no CUDA in it): reduced potentials of ``positions.npy``."""
    import openmm.unit as unit
    from openmmtools.states import ThermodynamicState

    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.simulation.systems import build_system

    ms = build_system(args.system)
    x = np.load(args.positions, mmap_mode="r")
    state = ThermodynamicState(ms.system, ms.temperature)
    t0 = time.time()
    with ReducedPotential(state, n_workers=args.energy_workers) as u:
        out = np.concatenate([u(np.asarray(x[s : s + 20000])) for s in range(0, len(x), 20000)])
        print(f"{len(x)} energies on {u.platform} x {args.energy_workers} workers in {time.time() - t0:.0f} s", flush=True)
    np.save(args.positions.replace(".npy", "_u.npy"), out)
    del unit


def _reduced_potentials(args, positions, tag):
    path = os.path.join(args.output, f"_{tag}.npy")
    np.save(path, positions)
    cmd = [sys.executable, __file__, "--energies-only", "--system", args.system, "--positions", path,
           "--energy-workers", str(args.energy_workers), "--output", args.output]
    subprocess.run(cmd, check=True)
    u = np.load(path.replace(".npy", "_u.npy"))
    os.remove(path)
    os.remove(path.replace(".npy", "_u.npy"))
    return u


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", required=True)
    p.add_argument("--trajectories", nargs="+")
    p.add_argument("--topology")
    p.add_argument("--output", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--representation", default="internal")
    p.add_argument("--n-bins", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=8)
    p.add_argument("--d-model", type=int, default=192)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--eval-interval", type=int, default=250)
    p.add_argument("--patience", type=int, default=0)
    p.add_argument("--time-budget-s", type=float, default=300)
    p.add_argument("--n-is", type=int, default=10000)
    p.add_argument("--n-eval", type=int, default=200000)
    p.add_argument("--n-resample", type=int, default=10000)
    p.add_argument("--sample-batch", type=int, default=8192)
    p.add_argument("--energy-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--energies-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--positions", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.energies_only:
        return _energies(args)

    import mdtraj
    import torch

    from openmm_arbg import ArBG
    from openmm_arbg.sampling.importance import effective_sample_size, log_importance_weights, resample
    from openmm_arbg.training import Trainer, TrainingConfig, load_trajectories

    files = sorted(f for pattern in args.trajectories for f in glob.glob(pattern))
    x = load_trajectories(files, args.topology)
    top = mdtraj.load_topology(args.topology)
    print(f"{len(x)} training frames from {len(files)} files", flush=True)
    network = dict(n_layer=args.n_layer, n_head=args.n_head, d_model=args.d_model, dropout=args.dropout)
    model = ArBG.from_data(top, x, representation=args.representation, n_bins=args.n_bins, network=network, seed=args.seed)
    model.to(args.device)
    model.metadata["command"] = "python benchmarks/train_and_propose.py " + " ".join(sys.argv[1:])
    print(model, flush=True)
    config = TrainingConfig(
        batch_size=args.batch_size, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
        eval_interval=args.eval_interval, patience=args.patience, time_budget_s=args.time_budget_s,
        warmup_steps=200, seed=args.seed,
    )
    t0 = time.time()
    trainer = Trainer(model, x, config, output_dir=args.output, progress=False)
    history = trainer.fit()
    print(f"trained {trainer.step} steps in {time.time() - t0:.0f} s; best validation NLL {trainer.best_val:.4f}", flush=True)
    del history

    results = {}
    for tag, n, seed in (("is", args.n_is, args.seed + 1), ("eval", args.n_eval, args.seed + 2)):
        t0 = time.time()
        with torch.no_grad():
            pos, log_q = model.sample(n, batch_size=args.sample_batch, seed=seed)
        t_sample = time.time() - t0
        ok = model.check_stereo(pos)
        u = np.full(n, np.inf)
        u[ok] = _reduced_potentials(args, pos[ok], tag)
        log_w = log_importance_weights(u, log_q, ok)
        out = dict(log_q=log_q, u=u, right_handed=ok, sample_seconds=t_sample)
        if tag == "eval":
            idx = resample(log_w, args.n_resample, rng=args.seed)
            out.update(resampled=pos[idx].astype(np.float32), resampled_index=idx)
        np.savez(os.path.join(args.output, f"{tag}.npz"), **out)
        ess = effective_sample_size(log_w)
        print(f"{tag}: {n} proposals in {t_sample:.1f} s, ESS/N {100 * ess / n:.3f} %, wrong-handed {int((~ok).sum())}", flush=True)
        results[tag] = ess / n


if __name__ == "__main__":
    main()
