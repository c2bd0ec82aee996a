"""Proposals and likelihood evaluations per second on the CPU, against the arithmetic limit.

For each thread count: proposals/s (KV-cache generation; also without the cache), log_prob/s
(one forward pass), the floating-point operations each costs (matrix products counted exactly
from the network's sizes; elementwise work not counted), the rate achieved, and the machine's
measured float32 matrix-multiply rate on the network's own largest product at the same batch
(the arithmetic limit for this network here).

Usage:
    python benchmarks/generation.py --n 4096 --batch 1024 --threads 1 2
"""

import argparse
import time

import torch

from openmm_arbg import ArBG
from openmm_arbg.pretrained import pretrained_path


def matmul_flops_per_molecule(cfg, n_coords):
    """Multiply-add operations x 2 of one pass over ``n_coords`` positions (generation with the
    KV cache and one log_prob forward pass do the same products)."""
    d, dh, V, L = cfg.d_model, cfg.d_hidden, cfg.vocab_size, cfg.n_layer
    per_position = L * (2 * d * 3 * d + 2 * d * d + 3 * 2 * d * dh) + 2 * d * V + 2 * cfg.n_input_features * d
    attention = sum(L * 2 * 2 * d * (i + 1) for i in range(n_coords))  # scores and weighted values, causal
    return n_coords * per_position + attention


def matmul_rate(batch, d, dh, seconds=1.0):
    """Measured float32 FLOP/s of (batch, d) @ (d, dh), the network's largest product."""
    a, b = torch.randn(batch, d), torch.randn(d, dh)
    for _ in range(10):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ b
        n += 20
    return n * 2 * batch * d * dh / (time.perf_counter() - t0)


def rate(fn, n_items, batch):
    fn()  # warm-up
    done, t0 = 0, time.perf_counter()
    while done < n_items:
        fn()
        done += batch
    return done / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model file (default: the shipped alanine dipeptide model)")
    p.add_argument("--n", type=int, default=4096, help="proposals and log_prob evaluations per measurement")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-uncached", action="store_true", help="skip generation without the KV cache (slow)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    model = ArBG.load(args.model or pretrained_path("alanine_dipeptide_vacuum"), device=args.device)
    dens, cfg = model.density, model.density.config
    flops = matmul_flops_per_molecule(cfg, dens.n_coords)
    print(f"model: {model}")
    print(f"network {cfg.n_layer} x {cfg.d_model} (hidden {cfg.d_hidden}, {cfg.vocab_size} tokens), {dens.n_coords} coordinates: "
          f"{flops / 1e6:.1f} MFLOP per proposal and per log_prob (matrix products)")
    print("| threads | operation | per second | GFLOP/s | matmul limit GFLOP/s | fraction of limit |")
    print("| --- | --- | --- | --- | --- | --- |")
    for threads in args.threads:
        torch.set_num_threads(threads)
        limit = matmul_rate(args.batch, cfg.d_model, cfg.d_hidden)
        g = torch.Generator(device=model.device).manual_seed(0)
        z, lq = dens.sample(args.batch, generator=g)
        assert (dens.log_prob(z) - lq).abs().max() < 1e-4
        rows = [("sample, KV cache", rate(lambda: dens.sample(args.batch, generator=g), args.n, args.batch))]
        if not args.no_uncached:
            rows.append(("sample, no KV cache", rate(lambda: dens.sample(args.batch, generator=g, kv_cache=False),
                                                     args.batch, args.batch)))
        rows.append(("log_prob", rate(lambda: dens.log_prob(z), args.n, args.batch)))
        for name, r in rows:
            achieved = r * flops if "no KV" not in name else float("nan")
            print(f"| {threads} | {name} | {r:,.0f} | {achieved / 1e9:.1f} | {limit / 1e9:.1f} | {achieved / limit:.2f} |")


if __name__ == "__main__":
    main()
