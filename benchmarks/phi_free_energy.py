"""Error of the phi > 0 free energy of alanine dipeptide (vacuum, 300 K) against cost, for
(a) Langevin MD, (b) openmmtools parallel tempering, (c) ArBGMove + Langevin, (d) importance
sampling with the model alone. The reference is umbrella sampling + MBAR (``arbg umbrella``).

Every method is run ``--repeats`` times independently at each budget of energy evaluations
(one MD step = one force evaluation; PT counts the steps of all replicas; an ArBGMove attempt or
an importance-sampling proposal = one energy evaluation). From the spread of the repeats against
the reference probability p of phi > 0:

* RMSE of the estimated p relative to p (about the error of F(phi>0) - F(phi<0) in kT),
* effective samples of the phi > 0 indicator, ``p (1 - p) / MSE(p_hat)``: how many independent
  Boltzmann samples would give the same mean squared error; per energy evaluation and per
  wall second.

Usage (each method writes ``OUTPUT/<method>.json``; ``--report`` merges them into a table and
``error_vs_cost.png``)::

    python benchmarks/phi_free_energy.py --methods md pt              # budgets 1e5, 1e6, 3e6 (about 25 min)
    python benchmarks/phi_free_energy.py --methods is                 # 2e3, 5e3, 1e4 proposals (about 6 min)
    python benchmarks/phi_free_energy.py --methods arbg               # 5e3, 2e4 evaluations (about 7 min)
    python benchmarks/phi_free_energy.py --methods arbg-recycled      # the same chains, estimates from every proposal
    python benchmarks/phi_free_energy.py --report

(``--budgets`` and ``--repeats`` change the defaults; ``--model`` another model; the default
reference is the shipped umbrella-sampling result.)
"""

import argparse
import json
import math
import os
import tempfile
import time

from openmm_arbg import ArBG  # first: it silences pymbar's import banner, which openmmtools would print

import numpy as np
import openmm
import openmm.unit as unit
import torch
from openmmtools import cache, mcmc, multistate, states

from openmm_arbg.analysis.observables import backbone_dihedrals
from openmm_arbg.pretrained import pretrained_path, reference_path
from openmm_arbg.sampling.chain import run_chain
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.sampling.importance import importance_sample
from openmm_arbg.simulation.systems import alanine_dipeptide_vacuum
from openmm_arbg.utils import write_json_atomic

T = 300.0


def _phi_positive(xyz, topology):
    phi, _ = backbone_dihedrals(np.asarray(xyz), topology)
    return phi[:, 0] >= 0


def run_md(ms, n_steps, seed, observe=50):
    """Fraction of frames with phi > 0 in one Langevin run of ``n_steps`` (after 10 ps of equilibration)."""
    integrator = openmm.LangevinMiddleIntegrator(T * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(ms.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ms.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
    context.setVelocitiesToTemperature(T * unit.kelvin, seed + 2)
    integrator.step(10000)
    t0 = time.time()
    xs = []
    for _ in range(n_steps // observe):
        integrator.step(observe)
        xs.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    wall = time.time() - t0
    return float(np.mean(_phi_positive(xs, ms.topology))), wall


def run_pt(ms, n_evaluations, seed, n_replicas=4, t_max=600.0, steps_per_iteration=500):
    """P(phi > 0) at 300 K from the 300 K state of openmmtools parallel tempering (300-600 K, geometric)."""
    np.random.seed(seed)
    n_iter = max(1, n_evaluations // (n_replicas * steps_per_iteration))
    move = mcmc.LangevinDynamicsMove(timestep=1 * unit.femtosecond, collision_rate=1 / unit.picosecond, n_steps=steps_per_iteration)
    sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=np.inf)
    sampler.online_analysis_interval = None
    platform = openmm.Platform.getPlatformByName("Reference")
    sampler.energy_context_cache = cache.ContextCache(platform=platform)
    sampler.sampler_context_cache = cache.ContextCache(platform=platform)
    thermo = states.ThermodynamicState(ms.system, T * unit.kelvin)
    with tempfile.TemporaryDirectory() as tmp:
        reporter = multistate.MultiStateReporter(os.path.join(tmp, "pt.nc"), checkpoint_interval=10**6)
        sampler.create(thermo, states.SamplerState(ms.positions), reporter, min_temperature=T * unit.kelvin,
                       max_temperature=t_max * unit.kelvin, n_temperatures=n_replicas)
        sampler.minimize(max_iterations=200)
        sampler.equilibrate(10000 // steps_per_iteration)
        t0 = time.time()
        xs = []
        for _ in range(n_iter):
            sampler.run(1)
            replica = int(np.where(sampler._replica_thermodynamic_states == 0)[0][0])
            xs.append(sampler._sampler_states[replica].positions.value_in_unit(unit.nanometer))
        wall = time.time() - t0
        reporter.close()
    return float(np.mean(_phi_positive(xs, ms.topology))), wall, n_iter * n_replicas * steps_per_iteration


def run_arbg_mcmc(ms, model_path, n_evaluations, seed, attempts=25, langevin_steps=25, recycle=False, buffer_size=1000):
    """P(phi > 0) from an MCMCSampler chain of ArBGMove + Langevin, observed after every iteration;
    with ``recycle``, also from every whole-molecule proposal of the chain, weighed as importance
    sampling (waste recycling; same energies, no more)."""
    n_iter = max(1, n_evaluations // (attempts + langevin_steps))
    chain = run_chain(model_path, states.ThermodynamicState(ms.system, T * unit.kelvin), ms.positions, n_iter, n_attempts=attempts,
                      langevin_steps=langevin_steps, buffer_size=min(buffer_size, n_iter * attempts), platform="Reference", minimize=True,
                      observables={"phi>0": lambda x: _phi_positive(x, ms.topology)}, keep_positions=False, seed=seed,
                      recycle=recycle)
    p_chain = float(np.mean(chain.observables["phi>0"]))
    if recycle:
        rec = chain.recycled_result
        lw = rec.log_weights
        w = np.exp(lw - lw[np.isfinite(lw)].max())
        p_rec = float(w[_phi_positive(rec.positions, ms.topology)].sum() / w.sum())
        return p_rec, chain.wall_time_s, chain.n_energy_evaluations, chain.acceptance_rate, p_chain
    return p_chain, chain.wall_time_s, chain.n_energy_evaluations, chain.acceptance_rate


def run_is_pool(ms, model_path, n_total, seed):
    """Draw one pool of proposals (disjoint chunks of it are independent importance-sampling runs)."""
    model = ArBG.load(model_path, topology=ms.topology)
    t0 = time.time()
    with ReducedPotential(states.ThermodynamicState(ms.system, T * unit.kelvin), n_workers=1) as u:
        result = importance_sample(model, u, n_total, seed=seed)
    seconds_per_proposal = (time.time() - t0) / n_total
    return result.log_weights, _phi_positive(result.positions, ms.topology), seconds_per_proposal


DEFAULT_BUDGETS = {"md": [100000, 1000000, 3000000], "pt": [100000, 1000000, 3000000], "arbg": [5000, 20000], "is": [2000, 5000, 10000],
                   "arbg-recycled": [5000, 20000]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=[], choices=["md", "pt", "arbg", "is", "arbg-recycled"])
    p.add_argument("--budgets", type=int, nargs="+", default=None,
                   help="energy evaluations per run (default: the budgets of docs/benchmarks.md for each method)")
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--attempts", type=int, default=25, help="ArBGMove attempts per iteration")
    p.add_argument("--langevin-steps", type=int, default=25, help="Langevin steps per ArBGMove iteration")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--buffer-size", type=int, default=1000, help="ArBGMove proposals per network call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="benchmark_phi", help="folder for per-method JSON and the plot")
    p.add_argument("--report", action="store_true", help="merge the JSON files into a table and error_vs_cost.png")
    p.add_argument("--reference", default=None, help="result.json of `arbg umbrella` (default: the shipped reference)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    ms = alanine_dipeptide_vacuum()
    model_path = args.model or pretrained_path("alanine_dipeptide_vacuum")
    for method in args.methods:
        rows = []
        budgets = args.budgets or DEFAULT_BUDGETS[method]
        if method == "is":
            n_max = max(budgets)
            log_w, pos, sec_per_eval = run_is_pool(ms, model_path, n_max * args.repeats, args.seed)
            for b in budgets:
                for r in range(args.repeats):
                    sl = slice(r * b, (r + 1) * b)
                    lw = log_w[sl]
                    w = np.exp(lw - lw[np.isfinite(lw)].max())
                    rows.append(dict(budget=b, repeat=r, p=float(w[pos[sl]].sum() / w.sum()), wall_s=sec_per_eval * b, evaluations=b,
                                     ess_fraction=float(w.sum() ** 2 / (w**2).sum() / b), proposals_phi_positive=float(pos[sl].mean())))
        else:
            for b in budgets:
                for r in range(args.repeats):
                    seed = args.seed + 1000 * r + 17
                    if method == "md":
                        est, wall = run_md(ms, b, seed)
                        row = dict(p=est, wall_s=wall, evaluations=b)
                    elif method == "pt":
                        est, wall, ev = run_pt(ms, b, seed)
                        row = dict(p=est, wall_s=wall, evaluations=ev)
                    elif method == "arbg":
                        est, wall, ev, acc = run_arbg_mcmc(ms, model_path, b, seed, args.attempts, args.langevin_steps, buffer_size=args.buffer_size)
                        row = dict(p=est, wall_s=wall, evaluations=ev, acceptance=acc)
                    else:
                        est, wall, ev, acc, p_chain = run_arbg_mcmc(ms, model_path, b, seed, args.attempts, args.langevin_steps, True, buffer_size=args.buffer_size)
                        row = dict(p=est, wall_s=wall, evaluations=ev, acceptance=acc, p_chain=p_chain)
                    rows.append(dict(budget=b, repeat=r, **row))
                    print(method, rows[-1], flush=True)
        write_json_atomic(os.path.join(args.output, f"{method}.json"), dict(method=method, model=model_path if method != "md" and method != "pt" else None, rows=rows))
    if args.report:
        ref = args.reference or reference_path("alanine_dipeptide_vacuum_300K_umbrella")
        report(args.output, ref)


NAMES = {"md": "(a) Langevin MD", "pt": "(b) parallel tempering, 4 replicas 300-600 K", "arbg": "(c) ArBGMove + Langevin",
         "is": "(d) importance sampling", "arbg-recycled": "(e) ArBGMove + Langevin, recycled proposals"}


def report(folder, reference):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(reference) as f:
        ref = json.load(f)["phi>0"]
    p_ref, dp_ref = ref["probability"], ref["probability_error"]
    print(f"reference P(phi>0) = {100 * p_ref:.3f} +- {100 * dp_ref:.3f} %  (F = {ref['free_energy_kT']:.3f} +- {ref['free_energy_error_kT']:.3f} kT)\n")
    print("| method | evaluations per run | runs | mean wall s | mean P(phi>0) % | runs with no phi>0 | relative RMSE of P (~kT) "
          "| effective samples per 10^6 evaluations | effective samples per wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    per_eval = {}
    for method in ("md", "pt", "arbg", "is", "arbg-recycled"):
        path = os.path.join(folder, f"{method}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            rows = json.load(f)["rows"]
        xs, ws, ys = [], [], []
        for b in sorted({r["budget"] for r in rows}):
            rr = [r for r in rows if r["budget"] == b]
            est = np.array([r["p"] for r in rr])
            ev = float(np.mean([r["evaluations"] for r in rr]))
            wall = float(np.mean([r["wall_s"] for r in rr]))
            mse = float(np.mean((est - p_ref) ** 2))
            n_eff = p_ref * (1 - p_ref) / mse if mse > 0 else math.inf
            rel = math.sqrt(mse) / p_ref
            per_eval.setdefault(method, []).append(n_eff / ev)
            print(f"| {NAMES[method]} | {ev:,.0f} | {len(rr)} | {wall:.1f} | {100 * est.mean():.3f} | {int(np.sum(est == 0))} | {rel:.2f} "
                  f"| {1e6 * n_eff / ev:,.1f} | {n_eff / wall:.2f} |")
            xs.append(ev), ws.append(wall), ys.append(rel)
        axes[0].loglog(xs, ys, "o-", label=NAMES[method])
        axes[1].loglog(ws, ys, "o-", label=NAMES[method])
    from matplotlib.ticker import NullFormatter

    for ax, label in zip(axes, ("energy evaluations per run", "wall seconds per run (this CPU)")):
        ax.axhline(dp_ref / p_ref, color="grey", ls="--", lw=1, label="the reference's own standard error")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("relative RMSE of P(phi > 0)  (~ error of F in kT)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"alanine dipeptide vacuum 300 K: P(phi>0) reference {100 * p_ref:.3f} % (umbrella + MBAR)")
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "error_vs_cost.png"), dpi=120)
    if "md" in per_eval:
        md = max(per_eval["md"])
        for method, vals in per_eval.items():
            print(f"best effective samples per evaluation, {NAMES[method]}: {max(vals) / md:.1f}x Langevin MD's best")
    print(f"\nplot -> {folder}/error_vs_cost.png")


if __name__ == "__main__":
    main()
