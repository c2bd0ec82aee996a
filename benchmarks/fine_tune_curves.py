"""Learning curves of single-molecule training runs side by side (issue 15: fine-tuning from a
transferable model against training from scratch): validation NLL per coordinate against wall
time, from each run's ``training_log.csv``. Both runs must validate on the same frames (same
trajectories, same ``validation_fraction``), as ``arbg train`` does by default.

    python benchmarks/fine_tune_curves.py --runs scratch_T tuned_T --labels "from scratch" \\
        "fine-tuned from the transferable model" --output fine_tune_T.png
"""

import argparse
import csv
import os


def read_log(folder):
    with open(os.path.join(folder, "training_log.csv")) as f:
        rows = list(csv.DictReader(f))
    return [float(r["elapsed_s"]) / 60 for r in rows], [float(r["val_nll"]) for r in rows]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="arbg train output folders")
    p.add_argument("--labels", nargs="+", help="one label per run (default: the folder names)")
    p.add_argument("--output", default="fine_tune.png")
    args = p.parse_args(argv)
    labels = args.labels or args.runs
    if len(labels) != len(args.runs):
        p.error("give one label per run")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    print("| run | minutes | best validation NLL (nats/coordinate) | reached at minute |")
    print("| --- | --- | --- | --- |")
    for folder, label in zip(args.runs, labels):
        t, nll = read_log(folder)
        ax.plot(t, nll, marker=".", label=label)
        best = min(range(len(nll)), key=nll.__getitem__)
        print(f"| {label} | {t[-1]:.1f} | {nll[best]:.4f} | {t[best]:.1f} |")
    ax.set_xlabel("training time (min, one CPU thread)")
    ax.set_ylabel("validation NLL (nats / coordinate)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"plot -> {args.output}")


if __name__ == "__main__":
    main()
