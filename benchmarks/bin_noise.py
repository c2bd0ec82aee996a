"""The representation's own floor: how much energy the bins alone add to MD frames.

For each system: a short MD run, a model whose bins are fitted to it (untrained: only the
representation and the bins matter here), then every frame's model coordinates are tokenized
and drawn again inside their bins (what sampling does after choosing the bins), converted back
to positions, and their reduced energies compared with the frames'. A trained model cannot
propose better than this, so a large value here (rings, say, whose closure bonds are implied by
the coordinates) would cap the ESS whatever the training.

Usage:
    python benchmarks/bin_noise.py --systems peptide:AAA peptide:F peptide:P peptide:W [--ps 40] [--bins 256]

Prints a table: coordinates by kind, the median and 90th percentile of the energy change (kT), the
frames' energy spread for scale, and the ESS/N that the bins alone leave to a model that is exact
at the level of bins: the Kish ESS of the weights exp(-dU) of the re-drawn frames (uniform inside
a bin where the Boltzmann density is not; an estimate, not a bound).
"""

import argparse
import tempfile

import numpy as np


def bin_noise(system_name, ps=40.0, n_bins=256, seed=0):
    """(model coordinates by kind, energy change of re-drawn frames (kT, array), frames' reduced
    energy standard deviation (kT)) for one built-in system."""
    import openmm.unit as unit
    import torch

    from openmm_arbg import ArBG
    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.simulation.md import run_md
    from openmm_arbg.simulation.systems import build_system

    ms = build_system(system_name)
    with tempfile.TemporaryDirectory() as tmp:
        traj = run_md(ms, tmp, n_steps=int(ps * 1000), report_interval=100, equilibration_steps=2000, seed=seed, progress=False)
    x = traj.xyz.astype(float)
    model = ArBG.from_data(ms.topology, x, n_bins=n_bins)
    z, _ = model.to_model_coordinates(x)
    d = model.discretizer
    tokens, _ = d.tokenize(z.double())
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(z.shape, generator=generator, dtype=torch.float64)
    redrawn = torch.stack([d.dequantize(tokens[:, j], u[:, j], j)[0] for j in range(z.shape[1])], 1)
    x_redrawn = model.from_model_coordinates(redrawn)
    with ReducedPotential(ms.system, temperature=ms.temperature.value_in_unit(unit.kelvin), n_workers=1) as potential:
        u_md, u_redrawn = potential(x), potential(x_redrawn)
    kinds, counts = np.unique(d.kinds, return_counts=True)
    return dict(zip(kinds.tolist(), counts.tolist())), u_redrawn - u_md, float(np.std(u_md))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", nargs="+", default=["peptide:AAA", "peptide:F", "peptide:P", "peptide:W"])
    p.add_argument("--ps", type=float, default=40.0, help="MD length per system (ps; a frame every 0.1 ps)")
    p.add_argument("--bins", type=int, default=256)
    args = p.parse_args(argv)

    from openmm_arbg.sampling.importance import effective_sample_size

    print("| system | bins | model coordinates | energy change of re-drawn frames, median (kT) | 90th percentile (kT) | "
          "frames' energy s.d. (kT) | ESS/N left by the bins |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.systems:
        kinds, du, spread = bin_noise(name, args.ps, args.bins)
        text = ", ".join(f"{v} {k}" for k, v in kinds.items())
        ess = effective_sample_size(-du) / len(du)
        print(f"| {name} | {args.bins} | {sum(kinds.values())} ({text}) | {np.median(du):.2f} | {np.percentile(du, 90):.2f} | "
              f"{spread:.1f} | {100 * ess:.0f} % |", flush=True)


if __name__ == "__main__":
    main()
