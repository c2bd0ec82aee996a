"""Where the importance-sampling ESS goes: for each state, its share of the proposals, of the
normalised weights, and of sum(w^2) (ESS = 1 / sum(w^2) for normalised weights, so a state
holding most of sum(w^2) is where the model under-proposes relative to the Boltzmann weight).

Usage:
    python benchmarks/weight_concentration.py MODEL_OR_SHIPPED_NAME --n 20000 --seed 15 \\
        --state "psi<-100=psi < -100" --state "C7ax=phi > 0"

Prints a table, and the ten heaviest proposals with their backbone dihedrals (degrees). With
``--coordinates K``, also the K coordinates of each heavy proposal whose log q terms are least
likely among all proposals (the percentile of the term in that coordinate's terms): a heavy weight
from fast coordinates (a bond or angle drawn in a tail the model under-covers) shows there,
where a missing basin shows in the states' table.
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
    p.add_argument("--coordinates", type=int, default=0, metavar="K",
                   help="name the K least likely coordinates of each of the ten heaviest proposals")
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
    heaviest = np.argsort(-w)[:10]
    for i in heaviest:
        print(f"  {w[i]:.4f}  " + "  ".join(f"{a:7.1f}" for a in (*phi[i], *psi[i])))
    if args.coordinates:
        least_likely_coordinates(model, res, heaviest, w, args.coordinates)


def least_likely_coordinates(model, res, heaviest, w, k):
    """For each heavy proposal, the ``k`` coordinates whose log q terms sit at the lowest
    percentiles of that coordinate's terms over all proposals, named by their atoms."""
    import torch

    valid = np.isfinite(res.log_weights)
    with torch.no_grad():
        z, _ = model.to_model_coordinates(res.positions[valid])
        terms = model.density.log_prob_terms(z).cpu().numpy()  # (n_valid, D)
    rank = np.argsort(np.argsort(terms, axis=0), axis=0) / max(1, len(terms) - 1)  # percentile of each term in its column
    row_of = np.cumsum(valid) - 1
    tuples = model.representation.coordinate_atom_tuples()
    kinds = model.discretizer.kinds
    values = z.numpy()
    graph = model.graph

    def atom(i):
        a = graph.atoms[i]
        return f"{a['resname']}{a['resSeq']}:{a['name']}"

    def name(j):
        atoms = tuples[j]
        label = {2: "bond", 3: "angle", 4: "torsion"}[len(atoms)]
        unit, scale = ("nm", 1.0) if len(atoms) == 2 else ("deg", 180 / np.pi)
        return label, "-".join(atom(a) for a in atoms), unit, scale

    print(f"least likely coordinates of the heaviest proposals (percentile of the log q term among {len(terms)} proposals)")
    for i in heaviest:
        r = row_of[i]
        worst = np.argsort(rank[r])[:k]
        parts = []
        for j in worst:
            label, atoms, unit, scale = name(j)
            median = np.median(values[:, j]) * scale
            parts.append(f"{label} {atoms} ({kinds[j]}) {values[r, j] * scale:.3g} {unit} (median {median:.3g}) at "
                         f"{100 * rank[r, j]:.2f} %")
        print(f"  {w[i]:.4f}  log q {res.log_q[i]:.1f}:  " + "; ".join(parts))


if __name__ == "__main__":
    main()
