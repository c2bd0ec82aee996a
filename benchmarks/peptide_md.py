"""Independent Langevin MD runs of a capped peptide in parallel worker processes (one OpenMM CPU
thread each): training data and independent references for the Table 1 peptides.

    python benchmarks/peptide_md.py --sequence AAA --ns 1.0 --runs 16 --workers 16 --output md_aaa

Each run ``output/run_XX`` is an ``openmm_arbg.simulation.md.run_md`` folder (trajectory.dcd,
topology.pdb, settings.json), with its own seed and its own equilibration from the built structure.
"""

import argparse
import multiprocessing as mp
import os
import time


def _one(job):
    sequence, ns, report_ps, seed, out, platform = job
    os.environ.setdefault("OPENMM_CPU_THREADS", "1")
    from openmm_arbg.simulation.md import run_md
    from openmm_arbg.simulation.systems import capped_peptide

    ms = capped_peptide(sequence)
    steps_per_frame = int(round(report_ps * 1000))
    n_frames = int(round(ns * 1000 / report_ps))
    t0 = time.time()
    traj = run_md(ms, out, n_steps=n_frames * steps_per_frame, report_interval=steps_per_frame, seed=seed,
                  platform=platform, equilibration_steps=20_000, progress=False)
    return out, traj.n_frames, time.time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequence", default="AAA")
    p.add_argument("--ns", type=float, default=1.0, help="ns per run")
    p.add_argument("--report-ps", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--platform", default="CPU")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    jobs = [(args.sequence, args.ns, args.report_ps, args.first_seed + i, os.path.join(args.output, f"run_{args.first_seed + i:02d}"), args.platform)
            for i in range(args.runs)]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for out, n, dt in pool.imap_unordered(_one, jobs):
            print(f"{out}: {n} frames in {dt:.0f} s", flush=True)


if __name__ == "__main__":
    main()
