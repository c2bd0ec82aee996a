"""Importance-sampling ESS and independence-MH acceptance of a trained alanine dipeptide model.

Usage:
    python benchmarks/model_quality.py MODEL.safetensors [MODEL2 ...] --n 10000 --mh-attempts 5000

Prints one row per model: ESS/N of N proposals (no clipping), the fraction of wrong-handed
proposals, log Z relative to the model, the acceptance rate of ArBGMove alone (pure independence
MH from the minimised structure), the phi>0 population that importance sampling estimates, and
the proposal time. Energies: OpenMM Reference platform, alanine dipeptide vacuum, 300 K.
"""

import argparse
import time

from openmm_arbg import ArBG  # first: it silences pymbar's import banner, which openmmtools would print

import openmm.unit as unit
import torch
from openmmtools import states

from openmm_arbg.analysis.free_energy import alanine_dipeptide_analysis
from openmm_arbg.sampling.chain import run_chain
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.sampling.importance import importance_sample
from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum


def evaluate(path, n, mh_attempts, seed, workers):
    ms = alanine_dipeptide_vacuum()
    model = ArBG.load(path, topology=ms.topology)
    thermo = states.ThermodynamicState(ms.system, 300 * unit.kelvin)
    t0 = time.time()
    with ReducedPotential(thermo, n_workers=workers) as u:
        res = importance_sample(model, u, n, seed=seed)
    t_is = time.time() - t0
    p_pos, dp_pos = alanine_dipeptide_analysis(res.positions, ms.topology, res.log_weights, rng=seed)["populations"]["phi>0"]
    chain = run_chain(model, thermo, ms.positions, max(1, mh_attempts // 100), n_attempts=100, buffer_size=1000, platform="Reference",
                      keep_positions=False, seed=seed)
    lz, dlz = res.log_partition_function()
    return dict(
        model=path,
        representation=model.representation.kind,
        parameters=model.n_parameters(),
        n=n,
        ess_frac=res.ess_fraction,
        wrong_stereo=1 - res.valid.mean(),
        log_z=lz,
        log_z_err=dlz,
        p_phi_pos=p_pos,
        p_phi_pos_err=dp_pos,
        acceptance=chain.acceptance_rate,
        mh_attempts=chain.statistics["n_proposed"],
        seconds=t_is,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--mh-attempts", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [evaluate(m, args.n, args.mh_attempts, args.seed, args.workers) for m in args.models]
    print("| model | repr. | params | N | ESS/N | wrong-handed | log Z | P(phi>0) (IS) | MH acceptance (attempts) | IS time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['representation']} | {r['parameters']:,} | {r['n']} | {100 * r['ess_frac']:.2f}% | "
            f"{100 * r['wrong_stereo']:.2f}% | {r['log_z']:.2f} ± {r['log_z_err']:.2f} | "
            f"{r['p_phi_pos']:.4f} ± {r['p_phi_pos_err']:.4f} | {100 * r['acceptance']:.2f}% ({r['mh_attempts']}) | {r['seconds']:.0f} s |"
        )


if __name__ == "__main__":
    main()
