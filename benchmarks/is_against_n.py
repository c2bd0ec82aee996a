"""Importance-sampling estimates against the number of proposals: ESS/N and state populations
(with bootstrap errors) from the first N of one draw, for several N. With heavy-tailed weights
(Pareto k near or above 0.5) an estimate can still move when a rare heavy proposal arrives; this
shows whether and where it does.

Usage:
    python benchmarks/is_against_n.py MODEL_OR_SHIPPED_NAME --n 10000 20000 50000 100000 --seed 14 \\
        --state "alphaL3=phi3 > 0" --state "alpha3=phi3 < 0 and -120 <= psi3 <= 50"

The draw is of max(--n) proposals (``importance_sample`` with the seed); every row uses a prefix.
"""

import argparse

import numpy as np


def main(argv=None):
    from weight_concentration import weighted_proposals  # benchmarks/ is on sys.path when a script in it runs

    from openmm_arbg.analysis.states import state_indicators
    from openmm_arbg.sampling.importance import effective_sample_size, weighted_mean

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--system", default=None, help="default: the built-in system of the model's molecule")
    p.add_argument("--n", type=int, nargs="+", default=[10000, 20000, 50000, 100000], help="prefix sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state", action="append", default=[], metavar="NAME=EXPRESSION")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    sizes = sorted(args.n)
    states = dict(text.split("=", 1) for text in args.state)
    args.n = sizes[-1]
    model, res, _ = weighted_proposals(args)
    masks = state_indicators(states, res.positions, model.topology)
    print("| N | ESS/N | " + " | ".join(states) + " |")
    print("| --- " * (len(states) + 2) + "|")
    for n in sizes:
        lw = res.log_weights[:n]
        row = [f"{100 * effective_sample_size(lw) / n:.2f} %"]
        for name in states:
            mean, err = weighted_mean(masks[name][:n].astype(float), lw, rng=0)
            row.append(f"{100 * float(mean):.2f} ± {100 * float(err):.2f}")
        print(f"| {n} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
