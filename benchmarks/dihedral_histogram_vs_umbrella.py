"""A model's importance-weighted free energy along one backbone dihedral against an umbrella
run's MBAR profile of the same dihedral (``arbg umbrella ... --dihedrals NAME``, its
``profile.csv``): where a basin population that disagrees goes wrong.

Usage:
    python benchmarks/dihedral_histogram_vs_umbrella.py MODEL --system peptide:T --dihedral phi2 \\
        --umbrella umb_phi2 --n 20000 --seed 21

Prints, per bin of the umbrella profile (its bin centres, degrees), -ln p of the weighted
histogram of the proposals (kT, zero at its most probable bin), the number of proposals in the
bin, and the umbrella's free energy with its error (zero at its own minimum). Bins without
proposals print inf: importance sampling knows nothing there.
"""

import argparse
import csv
import os

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--system", default=None, help="default: the built-in system of the model's molecule")
    p.add_argument("--dihedral", default="phi", help="phi, psi, phiK, psiK or i,j,k,l (default %(default)s)")
    p.add_argument("--umbrella", required=True, help="folder of an arbg umbrella run on this one dihedral")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import openmm_arbg  # noqa: F401  (before openmmtools/pymbar: keeps pymbar's banner out of the table)
    from openmm_arbg.analysis.observables import dihedrals
    from openmm_arbg.molecule.topology import dihedral_indices
    from weight_concentration import weighted_proposals  # benchmarks/ is on sys.path when a script in it runs

    with open(os.path.join(args.umbrella, "profile.csv")) as f:
        rows = list(csv.DictReader(f))
    columns = [k for k in rows[0] if k.endswith("_deg")]
    if len(columns) != 1:
        p.error(f"{args.umbrella}/profile.csv is a profile over {len(columns)} dihedrals; give a 1-D umbrella run")
    centres = np.array([float(r[columns[0]]) for r in rows])
    ref, ref_err = (np.array([float(r[k]) for r in rows]) for k in ("free_energy_kT", "error_kT"))
    width = float(np.median(np.diff(centres)))
    model, res, w = weighted_proposals(args)
    angle = np.degrees(dihedrals(res.positions, dihedral_indices(model.topology, [args.dihedral]))[:, 0])
    in_bin = np.abs((angle[:, None] - centres[None, :] + 180.0) % 360.0 - 180.0) <= width / 2
    mass, count = (w[:, None] * in_bin).sum(0), in_bin.sum(0)
    with np.errstate(divide="ignore"):
        F = -np.log(mass)
    F -= F[np.isfinite(F)].min()
    print(f"{args.model}: {args.n} proposals, seed {args.seed}: ESS/N {100 * res.ess_fraction:.2f} %, "
          f"Pareto k {res.pareto_k:.2f}; P({args.dihedral} > 0) = {100 * w[angle > 0].sum():.2f} %")
    print(f"| {args.dihedral} (deg) | model, IS (kT) | proposals | umbrella + MBAR (kT) |")
    print("| --- | --- | --- | --- |")
    for c, f_model, n, f_ref, e in zip(centres, F, count, ref, ref_err):
        print(f"| {c:g} | {f_model:.2f} | {n} | {f_ref:.2f} ± {e:.2f} |")


if __name__ == "__main__":
    main()
