"""Generation with and without the KV cache, and likelihood evaluations, per second (CPU).

Usage:
    python benchmarks/generation.py --n 2048 --batch 1024 --threads 2
"""

import argparse
import time

import torch

from openmm_arbg import ArBG
from openmm_arbg.pretrained import pretrained_path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = ArBG.load(args.model or pretrained_path("alanine_dipeptide_vacuum"), device=args.device)
    dens = model.density
    rows = []
    for cache in (True, False):
        g = torch.Generator(device=model.device).manual_seed(0)
        dens.sample(64, generator=g, kv_cache=cache)  # warm-up
        t0 = time.perf_counter()
        done = 0
        while done < args.n:
            z, lq = dens.sample(args.batch, generator=g, kv_cache=cache)
            done += args.batch
        rows.append((f"sample, KV cache {'on' if cache else 'off'}", done / (time.perf_counter() - t0)))
        if cache:
            z_ref, lq_ref = z, lq
    assert (dens.log_prob(z_ref) - lq_ref).abs().max() < 1e-4
    t0 = time.perf_counter()
    done = 0
    with torch.no_grad():
        while done < args.n:
            dens.log_prob(z_ref)
            done += len(z_ref)
    rows.append(("log_prob (one forward pass)", done / (time.perf_counter() - t0)))
    print(f"model: {model}")
    print("| operation | per second | relative to cached sampling |")
    print("| --- | --- | --- |")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
