"""Where the importance-sampling ESS goes: for each state, its share of the proposals, of the
normalised weights, and of sum(w^2) (ESS = 1 / sum(w^2) for normalised weights, so a state
holding most of sum(w^2) is where the model under-proposes relative to the Boltzmann weight).

Usage:
    python benchmarks/weight_concentration.py MODEL_OR_SHIPPED_NAME --n 20000 --seed 15 \\
        --state "psi<-100=psi < -100" --state "C7ax=phi > 0"

Prints a table, and the ten heaviest proposals with their backbone dihedrals (degrees).
"""

import argparse

import numpy as np


def weighted_proposals(args):
    """``args.n`` proposals of ``args.model`` (a file or a shipped name) importance-weighted
    against ``args.system`` (default: the model's built-in system) at its temperature, on
    ``args.threads`` torch threads: (model, ImportanceSamplingResult, normalised weights)."""
    import openmm.unit as unit
    import torch

    from openmm_arbg import ArBG
    from openmm_arbg.cli.common import resolve_shipped_model, system_for_model
    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.sampling.importance import importance_sample

    torch.set_num_threads(args.threads)
    resolve_shipped_model(args)  # a shipped model's name -> its file, as every arbg command does
    model = ArBG.load(args.model)
    ms = system_for_model(model, args.system)
    with ReducedPotential(ms.system, temperature=ms.temperature.value_in_unit(unit.kelvin), n_workers=1) as u:
        res = importance_sample(model, u, args.n, seed=args.seed)
    w = np.exp(res.log_weights - res.log_weights.max())
    return model, res, w / w.sum()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--system", default=None, help="default: the built-in system of the model's molecule")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state", action="append", default=[], metavar="NAME=EXPRESSION")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    from openmm_arbg.analysis.observables import backbone_dihedrals
    from openmm_arbg.analysis.states import StateExpression

    model, res, w = weighted_proposals(args)
    print(f"{args.model}: {args.n} proposals, seed {args.seed}: ESS/N {100 * res.ess_fraction:.2f} %, Pareto k {res.pareto_k:.2f}")
    print("| state | proposals | weight | share of sum(w^2) |")
    print("| --- | --- | --- | --- |")
    sum_w2 = np.sum(w**2)
    for text in args.state:
        name, _, expression = (part.strip() for part in text.partition("="))
        mask = np.asarray(StateExpression(expression, model.topology)(res.positions), dtype=bool)
        print(f"| {name} ({expression}) | {100 * mask.mean():.2f} % | {100 * w[mask].sum():.2f} % | "
              f"{100 * np.sum(w[mask] ** 2) / sum_w2:.1f} % |")
    phi, psi = backbone_dihedrals(res.positions, model.topology)
    print("heaviest proposals: weight, then every phi, then every psi (degrees)")
    for i in np.argsort(-w)[:10]:
        print(f"  {w[i]:.4f}  " + "  ".join(f"{a:7.1f}" for a in (*phi[i], *psi[i])))


if __name__ == "__main__":
    main()
