"""The ArBG paper's Table 1 metrics for a model trained by ``benchmarks/train_and_propose.py``,
against independent MD reference runs:

    python benchmarks/table1_report.py --system peptide:AAA --run aaa_gpu \\
        --reference 'md/run_0[01]/trajectory.dcd' 'md/run_3[45]/trajectory.dcd' --topology md/run_20/topology.pdb

ESS/N and Pareto k at ``n_is`` and ``n_eval`` proposals, E-W2 (kT) between ``n_resample``
configurations resampled from the ``n_eval`` weighted proposals and the reference frames, T-W2
(rad) over every backbone phi and psi, TICA-W2 (lag 100 frames, fitted on the reference), the
wrong-handed count, and the acceptance of an ArBGMove chain started from reference frames.
"""

import argparse
import glob
import json

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", required=True)
    p.add_argument("--run", required=True, help="output folder of train_and_propose.py")
    p.add_argument("--reference", nargs="+", required=True)
    p.add_argument("--topology", required=True)
    p.add_argument("--mcmc-applies", type=int, default=200)
    p.add_argument("--mcmc-attempts", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import mdtraj
    import openmm
    import openmm.unit as unit
    import torch
    from openmmtools import cache, states

    from openmm_arbg import ArBG, ArBGMove
    from openmm_arbg.analysis.evaluation import energy_w2, structural_w2
    from openmm_arbg.physics import default_platform
    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.sampling.importance import effective_sample_size, log_importance_weights, pareto_k
    from openmm_arbg.simulation.systems import build_system
    from openmm_arbg.training import load_trajectories

    torch.set_num_threads(1)
    ms = build_system(args.system)
    files = sorted(f for pattern in args.reference for f in glob.glob(pattern))
    ref = load_trajectories(files, args.topology)
    top = mdtraj.load_topology(args.topology)
    model = ArBG.load(f"{args.run}/model.safetensors", topology=top)
    row = dict(system=args.system, reference_frames=len(ref), reference_files=len(files), parameters=model.n_parameters())
    for tag in ("is", "eval"):
        d = np.load(f"{args.run}/{tag}.npz")
        log_w = log_importance_weights(d["u"], d["log_q"], d["right_handed"])
        n = len(log_w)
        row[f"ess_fraction_{n}"] = effective_sample_size(log_w) / n
        row[f"pareto_k_{n}"] = pareto_k(log_w)
        row[f"wrong_handed_{n}"] = int((~d["right_handed"]).sum())
        row[f"sample_seconds_{n}"] = float(d["sample_seconds"])
    resampled = d["resampled"].astype(float)
    row["distinct_resampled"] = int(len(np.unique(d["resampled_index"])))
    state = states.ThermodynamicState(ms.system, ms.temperature)
    with ReducedPotential(state) as u:
        u_ref = u(ref)
        u_res = u(resampled)
    row["e_w2"] = energy_w2(u_res, u_ref)
    w2 = structural_w2(ref, resampled, top, lag=100, max_points=5000, seed=args.seed)
    row["t_w2"], row["tica_w2"] = w2["t_w2"], w2["tica_w2"]
    # ArBGMove acceptance from reference frames (whole-molecule proposals)
    np.random.seed(args.seed)
    move = ArBGMove(f"{args.run}/model.safetensors", n_attempts=args.mcmc_attempts, buffer_size=500)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName(default_platform(ms.n_atoms, ms.system, ms.positions)))
    rng = np.random.default_rng(args.seed)
    for i in range(args.mcmc_applies):
        s = states.SamplerState(ref[rng.integers(len(ref))] * unit.nanometer)
        move.apply(state, s, context_cache)
    row["mcmc_acceptance"] = move.acceptance_rate
    row["mcmc_proposals"] = move.n_proposed
    row["mcmc_wrong_handed"] = move.n_wrong_stereo
    print(json.dumps(row, indent=1))
    with open(f"{args.run}/table1.json", "w") as f:
        json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
