"""SMC over partial structures against plain importance sampling at equal energy evaluations.

    python benchmarks/smc_vs_is.py --model alanine_dipeptide_vacuum --system alanine_dipeptide_vacuum \\
        --particles 2000 --stages 20 40 --repeats 5

SMC with N particles and M-1 intermediate stages costs M*N energy evaluations (the partial ones
on sub-Systems included); importance sampling gets M*N proposals. Reported: mean and spread of
log Z over repeats (the spread is the honest error of both), final ESS/N, and wall time.

With --betas, annealed SMC (openmm_arbg.sampling.annealed) instead: N model proposals tempered
towards the target through the betas, with --mcmc-steps moves per stage by --kernel; it costs
N * (1 + len(betas) * mcmc_steps) energy evaluations, and importance sampling gets as many:

    python benchmarks/smc_vs_is.py --particles 1000 --betas 0.25 0.5 0.75 --mcmc-steps 1 --kernel independence --repeats 5

--system/--model take anything the command line takes (a transferable model with --system peptide:SEQ).
"""

import argparse
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="alanine_dipeptide_vacuum", help="a shipped model's name or a file")
    p.add_argument("--system", default="alanine_dipeptide_vacuum")
    p.add_argument("--particles", type=int, default=2000)
    p.add_argument("--stages", type=int, nargs="+", default=[20, 40])
    p.add_argument("--lambdas", type=float, nargs="+", default=None, help="factor of each intermediate sub-energy (default 1)")
    p.add_argument("--betas", type=float, nargs="+", help="annealed SMC through these inverse-temperature factors")
    p.add_argument("--kernel", choices=("independence", "random-walk"), default="independence")
    p.add_argument("--mcmc-steps", type=int, default=1)
    p.add_argument("--step-nm", type=float, default=0.002)
    p.add_argument("--ess-threshold", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from openmm_arbg.cli.common import load_model, resolve_shipped_model
    from openmm_arbg.sampling.annealed import annealed_smc
    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.sampling.importance import effective_sample_size, importance_sample
    from openmm_arbg.sampling.smc import smc_sample
    from openmm_arbg.simulation.systems import build_system

    torch.set_num_threads(args.threads)
    spec = argparse.Namespace(model=args.model, system=args.system, device="cpu")
    resolve_shipped_model(spec)
    model = load_model(spec)
    ms = build_system(args.system)
    if args.betas:
        budget = args.particles * (1 + len(args.betas) * args.mcmc_steps)
    else:
        budget = (len(args.stages) + 1) * args.particles
    rows = {"annealed smc" if args.betas else "smc": [], "is": []}
    with ReducedPotential(ms.system, temperature=ms.temperature._value) as u:
        for r in range(args.repeats):
            t0 = time.time()
            if args.betas:
                res = annealed_smc(model, u, args.particles, args.betas, kernel=args.kernel, n_steps=args.mcmc_steps,
                                   step_nm=args.step_nm, ess_threshold=args.ess_threshold, seed=r)
                print(f"repeat {r}: acceptance per stage {[round(a, 3) for a in res.acceptance]}", flush=True)
            else:
                res = smc_sample(model, u, args.particles, stages=args.stages, lambdas=args.lambdas,
                                 ess_threshold=args.ess_threshold, seed=r)
            ess = effective_sample_size(res.log_weights)
            rows[next(iter(rows))].append((res.log_z, ess / args.particles, time.time() - t0, res.n_evaluations, res.n_resamplings))
            t0 = time.time()
            isr = importance_sample(model, u, budget, seed=100 + r)
            rows["is"].append((isr.log_partition_function()[0], isr.ess / budget, time.time() - t0, budget, 0))
    how = (f"betas {args.betas}, {args.mcmc_steps} {args.kernel} move(s) per stage" if args.betas
           else f"stages {args.stages}, lambdas {args.lambdas or 'all 1'}")
    print(f"{args.model} on {args.system}: SMC {args.particles} particles, {how} vs IS {budget} proposals, "
          f"{args.repeats} repeats each")
    print("| method | energy evaluations | log Z (mean +- sd over repeats) | final ESS/N | resamplings | wall s per run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, v in rows.items():
        v = np.array(v)
        print(f"| {name} | {int(v[0, 3])} | {v[:, 0].mean():.3f} +- {v[:, 0].std(ddof=1):.3f} | {100 * v[:, 1].mean():.2f} % | "
              f"{v[:, 4].mean():.1f} | {v[:, 2].mean():.1f} |")


if __name__ == "__main__":
    main()
