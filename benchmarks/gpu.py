"""Samples/s, training steps/s and energies/s on a GPU machine, in one command (issue 13).

Needs nothing beyond the package: the frames come from the package's own MD, the model is the
shipped alanine dipeptide model, the training runs are fresh networks. Run it from the repository
root on the machine to measure (it also runs on a CPU-only machine, with ``--device cpu``):

    python benchmarks/gpu.py --output gpu_bench            # cuda if torch sees one, else cpu
    python benchmarks/gpu.py --quick --device cpu           # a one-minute check of the script

Measures, each in this one run:

1. **Energies/s** of MD frames of alanine dipeptide (vacuum) and capped tri-alanine (OBC1):
   one Context on each platform OpenMM has here (Reference, CPU, CUDA, OpenCL), and the CPU
   platform in worker processes (``ReducedPotential(n_workers=...)``, one per core).
2. **Proposals/s and log_prob/s** of the shipped model at several batch sizes on ``--device``.
3. **Training steps/s** (AdamW, one step = one batch) for the shipped network size (3 x 96) and a
   larger one (4 x 192) at batch 512 on ``--device``, on alanine dipeptide frames.

Prints markdown tables and writes them with the command line to ``OUTPUT/results.json``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def md_frames(name, directory, n_steps, interval):
    from openmm_arbg.simulation.md import run_md
    from openmm_arbg.simulation.systems import build_system

    ms = build_system(name)
    frames = run_md(ms, os.path.join(directory, name.replace(":", "_")), n_steps=n_steps, report_interval=interval,
                    equilibration_steps=1000, progress=False, seed=3)
    return ms, frames


def energy_rates(ms, positions, workers, repeats):
    import openmm

    from openmm_arbg.physics import kT_kJ_per_mol  # noqa: F401  (package import check)
    from openmm_arbg.sampling.energies import ReducedPotential

    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    rows = []
    T = ms.temperature._value
    for platform in [p for p in ("Reference", "CPU", "CUDA", "OpenCL") if p in available]:
        for n_workers in ([1, workers] if platform == "CPU" and workers > 1 else [1]):
            with ReducedPotential(ms.system, temperature=T, platform=platform, n_workers=n_workers) as u:
                u(positions[:8])  # context (and pool) creation outside the timing
                t0 = time.perf_counter()
                for _ in range(repeats):
                    u(positions)
                rate = repeats * len(positions) / (time.perf_counter() - t0)
            rows.append(dict(platform=platform, workers=n_workers, energies_per_s=rate))
    return rows


def sampling_rates(model, batches, n_min):
    import torch

    dens = model.density
    g = torch.Generator(device=model.device).manual_seed(0)
    rows = []
    for batch in batches:
        def sync():
            if model.device.type == "cuda":
                torch.cuda.synchronize()

        z, _ = dens.sample(batch, generator=g)  # warm-up
        sync()
        n, t0 = 0, time.perf_counter()
        while n < max(n_min, batch):
            z, _ = dens.sample(batch, generator=g)
            n += batch
        sync()
        sample_rate = n / (time.perf_counter() - t0)
        n, t0 = 0, time.perf_counter()
        while n < max(n_min, batch):
            dens.log_prob(z)
            n += batch
        sync()
        rows.append(dict(batch=batch, proposals_per_s=sample_rate, log_prob_per_s=n / (time.perf_counter() - t0)))
    return rows


def training_rates(frames, device, sizes, n_steps, directory, batch_size=512):
    from openmm_arbg import ArBG
    from openmm_arbg.training.trainer import Trainer

    rows = []
    for n_layer, d_model, n_head in sizes:
        model = ArBG.from_data(frames.topology, frames.xyz.astype(float), network=dict(n_layer=n_layer, d_model=d_model,
                                                                                        n_head=n_head), seed=0)
        model.to(device)
        config = dict(n_steps=n_steps, batch_size=batch_size, warmup_steps=10, eval_interval=n_steps, checkpoint_interval=n_steps,
                      validation_fraction=0.1)
        trainer = Trainer(model, frames, config, output_dir=os.path.join(directory, f"train_{n_layer}x{d_model}"),
                          resume=False, progress=False)
        t0 = time.perf_counter()
        trainer.fit()
        elapsed = time.perf_counter() - t0
        rows.append(dict(network=f"{n_layer} x {d_model}", parameters=model.network.n_parameters(), steps=n_steps,
                         steps_per_s=n_steps / elapsed, frames_per_s=n_steps * batch_size / elapsed))
    return rows


def table(rows):
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(lines)


def main():
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default="gpu_bench")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes for CPU energies")
    p.add_argument("--quick", action="store_true", help="small sizes: checks that the script runs")
    args = p.parse_args()
    os.makedirs(args.output, exist_ok=True)
    quick = args.quick
    results = dict(command=" ".join(sys.argv), device=args.device, torch=torch.__version__,
                   gpu=torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None, cpu_count=os.cpu_count())

    # energies first: worker processes are forked before this process initialises CUDA
    results["energies"] = {}
    frames = {}
    for name in ("alanine_dipeptide_vacuum", "peptide:AAA"):
        ms, traj = md_frames(name, args.output, 2000 if quick else 20000, 10 if quick else 20)
        frames[name] = traj
        rows = energy_rates(ms, traj.xyz.astype(np.float64), args.workers, 1 if quick else 3)
        results["energies"][name] = rows
        print(f"\nEnergies/s, {name} ({len(traj)} MD frames)\n" + table(rows), flush=True)

    from openmm_arbg import ArBG
    from openmm_arbg.pretrained import pretrained_path

    model = ArBG.load(pretrained_path("alanine_dipeptide_vacuum"), device=args.device)
    batches = [256, 1024] if quick else [1024, 8192, 65536]
    results["sampling"] = sampling_rates(model, batches, 1024 if quick else 131072)
    print(f"\nShipped model (3 x 96, 60 coordinates) on {args.device}\n" + table(results["sampling"]), flush=True)

    sizes = [(3, 96, 4)] if quick else [(3, 96, 4), (4, 192, 8)]
    batch_size = 64 if quick else 512
    results["training"] = training_rates(frames["alanine_dipeptide_vacuum"], args.device, sizes, 20 if quick else 300,
                                         args.output, batch_size)
    print(f"\nTraining steps/s, batch {batch_size}, on {args.device}\n" + table(results["training"]), flush=True)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"\n-> {os.path.join(args.output, 'results.json')}")


if __name__ == "__main__":
    main()
