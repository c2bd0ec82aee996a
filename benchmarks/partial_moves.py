"""Partial-resampling against whole-molecule ArBG moves at equal energy evaluations (issue 12).

Each configuration runs a chain of ArBGMove attempts alone (one energy evaluation each, no
Langevin steps) from the same start, with a fixed distribution of cuts: ``0`` redraws the whole
molecule, a cut ``k`` keeps the first ``k`` model coordinates and redraws the rest from the
model's exact conditional. Reported per configuration: acceptance, wall time per attempt, and the
effective number of independent samples of the backbone dihedrals (the slowest of sin/cos of
every phi/psi; pymbar statistical inefficiency) per 1000 energy evaluations.

Cut specifications: comma-separated ``cut[:probability]`` items; a cut is a model-coordinate
index, ``H`` (the first coordinate of a hydrogen: redraw hydrogens only) or ``B`` (the first
coordinate after the last backbone dihedral of the first residue placed, so the other residues'
phi/psi are redrawn). Example::

    python benchmarks/partial_moves.py --model openmm_arbg/pretrained/alanine_dipeptide_vacuum.safetensors \
        --attempts 4000 --configs 0 0:0.5,H:0.5 0:0.5,B:0.5
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def named_cut(model, token):
    """Model-coordinate index of a cut token (see the module docstring)."""
    rep = model.representation
    if token == "H":
        return next(j for j, a in enumerate(rep.coordinate_atoms) if not model.graph.is_heavy(a) and j >= 3)
    if token == "B":
        from openmm_arbg.analysis.observables import backbone_dihedral_indices

        phi, psi = backbone_dihedral_indices(model.topology)
        quads = [tuple(q) for q in np.concatenate([phi, psi])]
        rank = {a: r for r, a in enumerate(rep.order)}
        # the dihedral completed first (its last-placed atom earliest); the cut follows its row
        first = min(quads, key=lambda q: max(rank[a] for a in q))
        last_atom = max(first, key=lambda a: rank[a])
        return max(j for j, a in enumerate(rep.coordinate_atoms) if a == last_atom) + 1
    return int(token)


def parse_config(model, text):
    cuts, probs = [], []
    for item in text.split(","):
        token, _, p = item.partition(":")
        cuts.append(named_cut(model, token))
        probs.append(float(p) if p else None)
    if any(p is None for p in probs):
        probs = [1.0 / len(cuts)] * len(cuts)
    return cuts, np.asarray(probs) / np.sum(probs)


def effective_samples(series):
    """min over columns of n / g (pymbar statistical inefficiency)."""
    from pymbar import timeseries

    n = len(series)
    g = max(timeseries.statistical_inefficiency(series[:, c]) if np.ptp(series[:, c]) > 0 else n for c in range(series.shape[1]))
    return n / g


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--system", default=None, help="target (default: the model's molecule's built-in system)")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--attempts", type=int, default=4000)
    p.add_argument("--burn-in", type=float, default=0.1, help="fraction of attempts discarded")
    p.add_argument("--configs", nargs="+", default=["0", "0:0.5,H:0.5", "0:0.5,B:0.5"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from openmm_arbg.utils import quiet_pymbar

    quiet_pymbar()  # before openmmtools imports pymbar
    import mdtraj
    import openmm.unit as unit
    from openmmtools.states import SamplerState, ThermodynamicState

    from openmm_arbg import ArBG, ArBGMove
    from openmm_arbg.analysis.observables import backbone_dihedral_indices
    from openmm_arbg.cli.common import system_for_model

    model = ArBG.load(args.model)
    ms = system_for_model(model, args.system)
    T = args.temperature or ms.temperature.value_in_unit(unit.kelvin)
    phi, psi = backbone_dihedral_indices(model.topology)
    quads = np.concatenate([phi, psi])
    start, _ = model.sample(64, seed=args.seed)  # a start near the model's typical set: its lowest-energy draw
    from openmm_arbg.sampling.energies import ReducedPotential

    with ReducedPotential(ms.system, temperature=T) as u:
        ok = model.check_stereo(start)
        e = np.where(ok, u(start), np.inf)
    x0 = start[int(np.argmin(e))]
    print(f"{model}; target {ms.name} at {T:g} K; backbone dihedrals {len(quads)}; {args.attempts} attempts per configuration")
    rows = []
    for text in args.configs:
        cuts, probs = parse_config(model, text)
        np.random.seed(args.seed)
        move = ArBGMove(model, n_attempts=1, cuts=cuts if cuts != [0] else None,
                        cut_probabilities=probs if cuts != [0] else None)
        state = ThermodynamicState(ms.system, temperature=T * unit.kelvin)
        sampler_state = SamplerState(x0 * unit.nanometer)
        xs = np.empty((args.attempts, model.n_atoms, 3), dtype=np.float32)
        t0 = time.perf_counter()
        for i in range(args.attempts):
            move.apply(state, sampler_state)
            xs[i] = sampler_state.positions.value_in_unit(unit.nanometer)
        wall = time.perf_counter() - t0
        keep = xs[int(args.burn_in * len(xs)):]
        angles = mdtraj.compute_dihedrals(mdtraj.Trajectory(keep, model.topology), quads)
        series = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
        n_eff = effective_samples(series)
        label = " + ".join(f"{c}:{q:.2f}" for c, q in zip(cuts, probs))
        rows.append((text, label, move.acceptance_rate, 1e3 * wall / args.attempts, n_eff, 1e3 * n_eff / len(keep)))
        print(f"  {text:>16s} (cuts {label}): acceptance {100 * move.acceptance_rate:.2f} %, {1e3 * wall / args.attempts:.1f} ms/attempt, "
              f"backbone n_eff {n_eff:.1f} of {len(keep)}", flush=True)
    print("\n| cuts (coordinate: probability) | acceptance | ms per attempt | backbone n_eff | n_eff per 1000 energies |")
    print("| --- | --- | --- | --- | --- |")
    for text, label, acc, ms_per, n_eff, per_k in rows:
        print(f"| {label} (`{text}`) | {100 * acc:.2f} % | {ms_per:.1f} | {n_eff:.1f} | {per_k:.2f} |")


if __name__ == "__main__":
    main()
