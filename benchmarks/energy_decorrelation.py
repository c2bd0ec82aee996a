"""How fast the reduced potential energy of Langevin MD decorrelates, at several frictions: the
independent frames per ns of MD that an E-W2 reference gets.

Usage:
    python benchmarks/energy_decorrelation.py --system peptide:AAA --frictions 1 10 --ps 200

For each friction (1/ps): one run of ``--ps`` ps at 1 fs after 20 ps of equilibration from the
minimised structure, the energy every 0.05 ps, and the statistical inefficiency g of the energy
(pymbar) when frames are saved every 0.05, 0.1, 0.5 and 1 ps, with the independent frames per ns
that gives (1000 / (spacing g)). Runs of a few hundred ps see only the fast part of the
decorrelation (bond and angle vibrations exchanging energy with the bath); changes of backbone
basin, each with its own mean energy, add a slow part that only long runs measure (the statistical
inefficiency of a long reference, as ``benchmarks/metric_floor.py`` prints it).
"""

import argparse
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", default="peptide:AAA")
    p.add_argument("--frictions", type=float, nargs="+", default=[1.0, 10.0], help="1/ps")
    p.add_argument("--ps", type=float, default=200.0, help="production ps per friction")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--platform", default="CPU")
    args = p.parse_args(argv)
    if args.ps < 20:
        p.error(f"--ps must be at least 20 (ps): the 1 ps spacing needs 20 frames; got {args.ps:g}")

    import openmm
    import openmm.unit as unit

    from openmm_arbg.physics import kT_kJ_per_mol  # first: the package quiets pymbar's import banner
    from openmm_arbg.simulation.systems import build_system
    from pymbar import timeseries

    ms = build_system(args.system)
    T = ms.temperature.value_in_unit(unit.kelvin)
    kT = kT_kJ_per_mol(T)
    spacings = (1, 2, 10, 20)  # in units of 0.05 ps
    rows = []
    for gamma in args.frictions:
        integrator = openmm.LangevinMiddleIntegrator(T * unit.kelvin, gamma / unit.picosecond, 1.0 * unit.femtosecond)
        integrator.setRandomNumberSeed(args.seed)
        platform = openmm.Platform.getPlatformByName(args.platform)
        context = openmm.Context(ms.system, integrator, platform, {"Threads": "1"} if args.platform == "CPU" else {})
        context.setPositions(ms.positions)
        openmm.LocalEnergyMinimizer.minimize(context)
        context.setVelocitiesToTemperature(T * unit.kelvin, args.seed)
        integrator.step(20000)
        start = time.time()
        energies = np.empty(int(round(args.ps / 0.05)))
        for i in range(len(energies)):
            integrator.step(50)
            energies[i] = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kT
        seconds = time.time() - start
        for every in spacings:
            g = timeseries.statistical_inefficiency(energies[::every])
            rows.append((gamma, 0.05 * every, g, 1000.0 / (0.05 * every * g), energies.std(), seconds))
        del context, integrator
    print(f"{args.system} at {T:g} K, {args.ps:g} ps per friction, {args.platform} platform")
    print("| friction (1/ps) | frame spacing (ps) | statistical inefficiency g | independent frames per ns | energy sd (kT) | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for gamma, spacing, g, per_ns, sd, seconds in rows:
        print(f"| {gamma:g} | {spacing:.2f} | {g:.2f} | {per_ns:.0f} | {sd:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
