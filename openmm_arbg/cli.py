"""The ``arbg`` command line: ``md``, ``train``, ``sample``, ``mcmc``, ``free-energy``, ``evaluate``,
``umbrella`` and ``demo``.

Every option can also come from a YAML file given with ``--config`` (keys are the long option
names with ``-`` or ``_``); options on the command line win.
"""

import argparse
import logging
import os
import sys
import time

__all__ = ["main"]

logging.getLogger("pymbar").setLevel(logging.ERROR)


def _add_config(parser):
    parser.add_argument("--config", help="YAML file with option values (command-line options override it)")


def _apply_yaml(parser, args, argv):
    if not getattr(args, "config", None):
        return args
    import yaml

    with open(args.config) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        parser.error(f"{args.config} must hold a mapping of option names to values")
    known = {a.dest for a in parser._actions}
    given = {a.dest for a in parser._actions for s in a.option_strings if s in argv}
    for key, value in values.items():
        dest = key.replace("-", "_")
        if dest not in known:
            parser.error(f"{args.config}: unknown option {key!r}")
        if dest not in given:
            setattr(args, dest, value)
    return args


def _steps(duration_ps, report_ps, timestep_fs, duration_option):
    """MD steps and steps between frames from times in ps; the run is a whole number of frames."""
    n_steps = int(round(duration_ps * 1e3 / timestep_fs))
    report = int(round(report_ps * 1e3 / timestep_fs))
    n_steps -= n_steps % report
    if n_steps <= 0:
        raise ValueError(f"{duration_option} is shorter than one frame interval (--report-ps {report_ps})")
    return n_steps, report


# ---------------------------------------------------------------------- md
def _cmd_md(args):
    import openmm.unit as unit

    from .simulation.md import run_md
    from .simulation.systems import build_system

    ms = build_system(args.system)
    n_steps, report = _steps(args.ns * 1e3, args.report_ps, args.timestep_fs, f"--ns {args.ns}")
    temperatures = args.temperatures or [ms.temperature.value_in_unit(unit.kelvin)]
    for T in temperatures:
        out = os.path.join(args.output, f"{T:g}K")
        traj = run_md(
            ms,
            out,
            n_steps=n_steps,
            report_interval=report,
            temperature=T,
            timestep_fs=args.timestep_fs,
            seed=args.seed,
            platform=args.platform,
            equilibration_steps=int(round(args.equilibration_ps * 1e3 / args.timestep_fs)),
            progress=not args.quiet,
        )
        print(f"{out}: {traj.n_frames} frames at {T:g} K -> {out}/trajectory.dcd (topology {out}/topology.pdb)")


# ---------------------------------------------------------------------- train
def _cmd_train(args):
    import torch

    from . import ArBG
    from .molecule.topology import MolecularGraph
    from .training import Trainer, TrainingConfig, load_trajectories

    if args.threads:
        torch.set_num_threads(args.threads)
    import mdtraj

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: DistributedDataParallel
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if str(args.device).startswith("cuda") else "gloo")
        if str(args.device).startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"

    if not os.path.isfile(args.topology):
        raise FileNotFoundError(f"topology file {args.topology} does not exist")
    top = mdtraj.load_topology(args.topology)
    graph = MolecularGraph.from_topology(top)
    x = load_trajectories(args.trajectories, args.topology, stride=args.stride, graph=graph)
    print(f"{len(x)} frames of {graph.n_atoms} atoms from {len(args.trajectories)} file(s)")
    config = TrainingConfig(
        n_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        ema_decay=args.ema,
        eval_interval=args.eval_interval,
        patience=args.patience,
        validation_fraction=args.validation_fraction,
        max_time_s=args.max_minutes * 60,
        seed=args.seed,
    )
    checkpoint = os.path.join(args.output, "checkpoint.safetensors")
    model = ArBG.from_data(
        top,
        x,
        representation=args.representation,
        n_bins=args.bins,
        network=dict(n_layer=args.layers, n_head=args.heads, d_model=args.d_model),
        seed=args.seed,
    )
    if args.restart:
        for name in ("checkpoint.safetensors", "model.safetensors", "training_log.csv"):
            if os.path.exists(os.path.join(args.output, name)):
                os.remove(os.path.join(args.output, name))
    elif os.path.exists(checkpoint):
        print(f"resuming from {checkpoint}")
    model.to(args.device)
    model.metadata["command"] = "arbg train " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "arbg train"
    print(model)
    trainer = Trainer(model, x, config, output_dir=args.output, resume=True, progress=not args.quiet)
    history = trainer.fit()
    last = history[-1] if history else {}
    print(
        f"step {trainer.step}/{config.n_steps}: validation NLL {last.get('val_nll', float('nan')):.4f} nats/coordinate; "
        f"best model -> {trainer.model_path}; log -> {trainer.log_path}"
    )


# ---------------------------------------------------------------------- sample
def _cmd_sample(args):
    import numpy as np

    from . import ArBG
    from .sampling.energies import ReducedPotential
    from .sampling.importance import importance_sample

    model = ArBG.load(args.model)
    if args.system:
        from openmmtools.states import ThermodynamicState
        import openmm.unit as unit

        from .simulation.systems import build_system

        ms = build_system(args.system)
        model.check_topology(ms.topology)
        T = args.temperature or ms.temperature.value_in_unit(unit.kelvin)
        state = ThermodynamicState(ms.system, T * unit.kelvin)
        with ReducedPotential(state, n_workers=args.workers) as u:
            t0 = time.time()
            result = importance_sample(model, u, args.n, proposal_temperature=args.proposal_temperature, seed=args.seed)
            print(f"{result.summary()}  [{time.time() - t0:.1f} s]")
        positions = result.positions
        if args.resample:
            positions = result.resample(rng=args.seed)
    else:
        positions, log_q = model.sample(args.n, proposal_temperature=args.proposal_temperature, seed=args.seed)
        print(f"{len(positions)} samples, mean log q {np.mean(log_q):.2f}")
    if args.output:
        import mdtraj

        mdtraj.Trajectory(positions.astype("float32"), model.topology).save(args.output)
        print(f"samples -> {args.output}")


# ---------------------------------------------------------------------- mcmc
def _cmd_mcmc(args):
    import mdtraj
    import numpy as np
    import openmm
    import openmm.unit as unit
    from openmmtools import cache, mcmc, states
    from tqdm.auto import tqdm

    from .sampling.mcmc import ArBGMove
    from .physics import default_platform
    from .simulation.systems import build_system

    ms = build_system(args.system)
    T = args.temperature or ms.temperature.value_in_unit(unit.kelvin)
    thermo = states.ThermodynamicState(ms.system, T * unit.kelvin)
    np.random.seed(args.seed)
    arbg_move = ArBGMove(args.model, n_attempts=args.attempts, proposal_temperature=args.proposal_temperature)
    arbg_move.model.check_topology(ms.topology)
    moves = [arbg_move]
    if args.langevin_steps:
        moves.insert(0, mcmc.LangevinDynamicsMove(n_steps=args.langevin_steps, timestep=1.0 * unit.femtosecond))
    sampler = mcmc.MCMCSampler(thermo, states.SamplerState(ms.positions), mcmc.SequenceMove(moves))
    platform = openmm.Platform.getPlatformByName(args.platform or default_platform(ms.n_atoms))
    context_cache = cache.ContextCache(platform=platform)
    frames = []
    for _ in tqdm(range(args.iterations), desc="mcmc", unit="it", disable=args.quiet):
        sampler.run(1, context_cache=context_cache)
        frames.append(sampler.sampler_state.positions.value_in_unit(unit.nanometer))
    traj = mdtraj.Trajectory(np.array(frames, dtype=np.float32), mdtraj.Topology.from_openmm(ms.topology))
    traj.save(args.output)
    evals = args.iterations * (args.attempts + args.langevin_steps)
    print(
        f"{args.iterations} iterations, {evals:,} energy evaluations; ArBGMove acceptance "
        f"{100 * arbg_move.acceptance_rate:.1f}% of {arbg_move.n_proposed} (wrong-handed {arbg_move.n_wrong_stereo}, "
        f"failed energies {arbg_move.n_failed_energy}); trajectory -> {args.output}"
    )
    if ms.name.startswith("alanine_dipeptide"):
        from .analysis.observables import BASINS, alanine_dipeptide_basins, backbone_dihedrals
        from .analysis.free_energy import basin_free_energy_from_chain

        basin = alanine_dipeptide_basins(*backbone_dihedrals(traj.xyz, ms.topology))
        for k, name in enumerate(BASINS[1:], start=1):
            f, df = basin_free_energy_from_chain(basin == 0, basin == k)
            print(f"F({name}) - F(beta) = {f:.2f} +- {df:.2f} kT  (population {100 * np.mean(basin == k):.2f}%)")


# ---------------------------------------------------------------------- free energy
def _cmd_free_energy(args):

    from .analysis.observables import BASINS, alanine_dipeptide_basins, backbone_dihedrals
    from .analysis.free_energy import basin_free_energy_from_chain, basin_free_energy_from_weights

    if bool(args.trajectory) == bool(args.model):
        raise ValueError("give either --trajectory (with --topology) for a chain, or --model (with --system) for importance sampling")
    if args.trajectory:
        import mdtraj

        if not args.topology or not os.path.isfile(args.topology):
            raise FileNotFoundError(f"topology file {args.topology} does not exist (--topology)")
        traj = mdtraj.load(args.trajectory, top=args.topology, stride=args.stride)
        basin = alanine_dipeptide_basins(*backbone_dihedrals(traj.xyz, traj.topology))
        label = f"{traj.n_frames} frames of {args.trajectory} (errors: statistical inefficiency)"

        def estimate(k):
            return basin_free_energy_from_chain(basin == 0, basin == k)

    else:
        import openmm.unit as unit
        from openmmtools.states import ThermodynamicState

        from . import ArBG
        from .sampling.energies import ReducedPotential
        from .sampling.importance import importance_sample
        from .simulation.systems import build_system

        ms = build_system(args.system)
        model = ArBG.load(args.model, topology=ms.topology)
        T = args.temperature or ms.temperature.value_in_unit(unit.kelvin)
        with ReducedPotential(ThermodynamicState(ms.system, T * unit.kelvin), n_workers=args.workers) as u:
            result = importance_sample(model, u, args.n, seed=args.seed)
        print(result.summary())
        basin = alanine_dipeptide_basins(*backbone_dihedrals(result.positions, ms.topology))
        label = f"importance sampling, {args.n} proposals (errors: bootstrap)"

        def estimate(k):
            return basin_free_energy_from_weights(result.log_weights, basin == 0, basin == k, rng=args.seed)

    print(f"alanine dipeptide basin free energies relative to beta, {label}:")
    for k, name in enumerate(BASINS[1:], start=1):
        f, df = estimate(k)
        print(f"  F({name}) - F(beta) = {f:.3f} +- {df:.3f} kT")


# ---------------------------------------------------------------------- evaluate
def _cmd_evaluate(args):
    import mdtraj
    import numpy as np
    import openmm.unit as unit
    from openmmtools.states import ThermodynamicState

    from . import ArBG
    from .analysis.observables import backbone_dihedrals
    from .sampling.energies import ReducedPotential
    from .analysis.evaluation import dihedral_features, energy_histogram_plot, energy_w2, ramachandran_plot, tica_w2, torus_w2
    from .sampling.importance import importance_sample, resample
    from .simulation.systems import build_system

    ms = build_system(args.system)
    model = ArBG.load(args.model, topology=ms.topology)
    if not os.path.isfile(args.topology):
        raise FileNotFoundError(f"topology file {args.topology} does not exist")
    ref = mdtraj.load(args.reference, top=args.topology, stride=args.stride)
    model.check_topology(ref.topology)
    T = args.temperature or ms.temperature.value_in_unit(unit.kelvin)
    os.makedirs(args.output, exist_ok=True)
    with ReducedPotential(ThermodynamicState(ms.system, T * unit.kelvin), n_workers=args.workers) as u:
        result = importance_sample(model, u, args.n, seed=args.seed)
        picks = resample(result.log_weights, args.n, rng=args.seed)
        u_ref = u(ref.xyz.astype(float))
    x_rs = result.positions[picks]
    u_rs = result.reduced_potentials[picks]
    phi_r, psi_r = backbone_dihedrals(ref.xyz, ref.topology)
    phi_s, psi_s = backbone_dihedrals(x_rs, ms.topology)
    phi_p, psi_p = backbone_dihedrals(result.positions, ms.topology)
    e_w2 = energy_w2(u_rs, u_ref)
    t_w2, n_t = torus_w2(np.radians(np.concatenate([phi_s, psi_s], 1)), np.radians(np.concatenate([phi_r, psi_r], 1)), args.max_points, args.seed)
    tica, n_tica = tica_w2(dihedral_features(ref.xyz, ref.topology), dihedral_features(x_rs, ms.topology), args.lag, args.max_points, args.seed)
    w = np.exp(result.log_weights - result.log_weights[np.isfinite(result.log_weights)].max())
    ramachandran_plot(
        [("reference MD", phi_r[:, 0], psi_r[:, 0], None), ("proposals", phi_p[:, 0], psi_p[:, 0], None), ("reweighted", phi_p[:, 0], psi_p[:, 0], w)],
        os.path.join(args.output, "ramachandran.png"),
    )
    energy_histogram_plot(
        [("reference MD", u_ref, None), ("proposals", result.reduced_potentials, None), ("resampled", u_rs, None)],
        os.path.join(args.output, "energies.png"),
    )
    rows = [
        ("proposals (energy evaluations)", f"{args.n}"),
        ("ESS/N", f"{100 * result.ess_fraction:.2f} %"),
        ("E-W2 (kT)", f"{e_w2:.3f}"),
        ("T-W2 (rad)", f"{t_w2:.3f} ({n_t} points)"),
        ("TICA-W2", f"{tica:.3f} ({n_tica} points, lag {args.lag} frames)"),
        ("reference frames", f"{ref.n_frames}"),
    ]
    text = "| metric | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
    with open(os.path.join(args.output, "evaluation.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"plots -> {args.output}/ramachandran.png, {args.output}/energies.png")


# ---------------------------------------------------------------------- umbrella
def _resolve_dihedrals(names, topology):
    """Atom quadruples from 'phi', 'psi' (first residue that has one) or 'i,j,k,l'."""
    import mdtraj
    import numpy as np

    top = mdtraj.Topology.from_openmm(topology)
    fake = mdtraj.Trajectory(np.zeros((1, top.n_atoms, 3), dtype=np.float32), top)
    out = []
    for name in names:
        if name in ("phi", "psi"):
            idx = (mdtraj.compute_phi if name == "phi" else mdtraj.compute_psi)(fake)[0]
            if len(idx) == 0:
                raise ValueError(f"the molecule has no backbone {name} dihedral; give atom indices as i,j,k,l")
            out.append([int(a) for a in idx[0]])
        else:
            try:
                atoms = [int(a) for a in name.split(",")]
            except ValueError:
                atoms = []
            if len(atoms) != 4 or not all(0 <= a < top.n_atoms for a in atoms):
                raise ValueError(f"dihedral {name!r}: give phi, psi, or four atom indices (0-based, < {top.n_atoms}) as i,j,k,l")
            out.append(atoms)
    return out


def _cmd_umbrella(args):
    import json
    import shlex

    import numpy as np
    import openmm.unit as unit

    from .analysis.observables import BASINS, alanine_dipeptide_basins
    from .simulation.systems import build_system
    from .simulation.umbrella import dihedral_grid, free_energy_from_probability, run_umbrella

    if args.export and not args.save_positions:
        raise ValueError("--export draws frames from the windows' positions: add --save-positions")
    ms = build_system(args.system)
    dihedrals = _resolve_dihedrals(args.dihedrals, ms.topology)
    T = args.temperature or ms.temperature.value_in_unit(unit.kelvin)
    n_steps, report = _steps(args.ps, args.report_ps, args.timestep_fs, f"--ps {args.ps}")
    result = run_umbrella(
        ms,
        dihedrals,
        dihedral_grid(args.windows, len(dihedrals)),
        args.output,
        k=args.k,
        n_steps=n_steps,
        report_interval=report,
        equilibration_steps=int(round(args.equilibration_ps * 1e3 / args.timestep_fs)),
        temperature=T,
        timestep_fs=args.timestep_fs,
        seed=args.seed,
        platform=args.platform,
        n_workers=args.workers,
        save_positions=args.save_positions,
        max_samples_per_window=args.mbar_samples,
        progress=not args.quiet,
    )
    n_unc = result.n_uncorrelated
    summary = dict(
        system=args.system,
        temperature_K=T,
        windows=len(n_unc),
        frames=int(sum(len(v) for v in result.dihedrals)),
        mbar_frames=int(n_unc.sum()),
        min_mbar_frames_per_window=int(n_unc.min()),
        mbar_samples_per_window=args.mbar_samples,
        command="arbg umbrella " + shlex.join(args.argv),
    )
    names = list(args.dihedrals)
    print(
        f"MBAR over {len(n_unc)} windows, {summary['mbar_frames']} decorrelated frames (at most {args.mbar_samples} per "
        f"window, fewest {n_unc.min()}), {T:g} K:"
    )
    if "phi" in names:
        j = names.index("phi")
        regions = {"phi>0": lambda v: v[:, j] >= 0}
        if "psi" in names:
            m = names.index("psi")
            for b, basin in enumerate(BASINS):
                regions[basin] = lambda v, b=b: alanine_dipeptide_basins(np.degrees(v[:, j]), np.degrees(v[:, m])) == b
        for name, indicator in regions.items():
            p, dp = result.probability(indicator)
            f, df = free_energy_from_probability(p, dp)
            summary[name] = dict(probability=p, probability_error=dp, free_energy_kT=f, free_energy_error_kT=df)
            print(f"  P({name}) = {100 * p:.4f} +- {100 * dp:.4f} %   F({name}) - F(rest) = {f:.3f} +- {df:.3f} kT")
    with open(os.path.join(args.output, "result.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"-> {args.output}/result.json")
    if args.export:
        import mdtraj

        indicator = None
        if args.export_region != "all":
            if "phi" not in names:
                raise ValueError("--export-region phi>0 needs phi among --dihedrals")
            j = names.index("phi")
            indicator = lambda v: v[:, j] >= 0  # noqa: E731
        xyz = result.resample(args.export, indicator, rng=args.seed)
        path = os.path.join(args.output, "frames.dcd")
        mdtraj.Trajectory(xyz.astype("float32"), mdtraj.Topology.from_openmm(ms.topology)).save_dcd(path)
        print(f"{args.export} frames resampled from the unbiased distribution ({args.export_region}) -> {path}")


# ---------------------------------------------------------------------- demo
def _cmd_demo(args):
    from .demo import run_demo

    run_demo(args.output, minutes=args.minutes, quiet=args.quiet)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="arbg",
        description="Autoregressive Boltzmann Generators for OpenMM: generate MD, train a model on it, and sample "
        "Boltzmann-distributed conformations exactly (importance sampling / Metropolis-Hastings).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("md", help="run unconstrained Langevin MD to make training data", description=_cmd_md.__doc__)
    _add_config(p)
    p.add_argument("--system", default="alanine_dipeptide_vacuum", help="system name or peptide:SEQUENCE (default %(default)s)")
    p.add_argument("--temperatures", type=float, nargs="+", default=None, help="temperatures in K, one run each (default: the system's, 300 K for alanine dipeptide, 310 K for peptides)")
    p.add_argument("--ns", type=float, default=1.0, help="simulated time per temperature in ns (default %(default)s)")
    p.add_argument("--report-ps", type=float, default=0.2, help="ps between saved frames (default %(default)s)")
    p.add_argument("--equilibration-ps", type=float, default=10.0, help="ps of dynamics before the first saved frame (default %(default)s)")
    p.add_argument("--timestep-fs", type=float, default=1.0, help="time step in fs; systems are unconstrained (default %(default)s)")
    p.add_argument("--platform", default=None, help="OpenMM platform (default: Reference for small molecules)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="arbg_md", help="output folder; one subfolder per temperature (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_md)

    p = sub.add_parser("train", help="train an ArBG on trajectories by maximum likelihood")
    _add_config(p)
    p.add_argument("--trajectories", nargs="+", required=False, help="trajectory files mdtraj reads (DCD, XTC, H5, ...)")
    p.add_argument("--topology", required=False, help="topology file (PDB) of the molecule")
    p.add_argument("--stride", type=int, default=1, help="use every n-th frame (default %(default)s)")
    p.add_argument("--output", default="arbg_model", help="folder for model.safetensors, checkpoint and log (default %(default)s)")
    p.add_argument("--representation", choices=["internal", "cartesian"], default="internal", help="model coordinates (default %(default)s)")
    p.add_argument("--bins", type=int, default=256, help="bins per coordinate (default %(default)s)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--steps", type=int, default=5000, help="optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights, e.g. 0.999 (default off)")
    p.add_argument("--eval-interval", type=int, default=250)
    p.add_argument("--patience", type=int, default=0, help="early stopping after this many evaluations without improvement")
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (resumably) after this wall time")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="draw conformations; with --system, importance weights and ESS")
    _add_config(p)
    p.add_argument("--model", required=False, help="model file (model.safetensors)")
    p.add_argument("--n", type=int, default=1000, help="number of proposals (default %(default)s)")
    p.add_argument("--system", help="target system for importance weights (e.g. alanine_dipeptide_vacuum)")
    p.add_argument("--temperature", type=float, help="target temperature in K (default: the system's)")
    p.add_argument("--proposal-temperature", type=float, default=1.0, help="softmax temperature of the model")
    p.add_argument("--workers", type=int, default=1, help="processes for OpenMM energies")
    p.add_argument("--resample", action="store_true", help="write a resampled (Boltzmann-distributed) population")
    p.add_argument("--output", help="write samples to this trajectory file (e.g. samples.dcd)")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("mcmc", help="sample a system with ArBGMove (+ Langevin) in an openmmtools MCMCSampler")
    _add_config(p)
    p.add_argument("--model", required=False, help="model file")
    p.add_argument("--system", default="alanine_dipeptide_vacuum", help="system name or peptide:SEQUENCE")
    p.add_argument("--temperature", type=float, help="K (default: the system's)")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--attempts", type=int, default=10, help="ArBG Metropolis-Hastings attempts per iteration")
    p.add_argument("--langevin-steps", type=int, default=100, help="1 fs Langevin steps per iteration (0: ArBG moves only)")
    p.add_argument("--proposal-temperature", type=float, default=1.0, help="softmax temperature of the proposal (exact at any value)")
    p.add_argument("--platform", default=None)
    p.add_argument("--seed", type=int, default=0, help="seeds numpy's global generator (openmmtools' convention)")
    p.add_argument("--output", default="arbg_mcmc.dcd", help="trajectory file of the chain")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_mcmc)

    p = sub.add_parser("free-energy", help="alanine dipeptide basin free energies from a trajectory or by importance sampling")
    _add_config(p)
    p.add_argument("--trajectory", help="MD or MCMC trajectory (chain estimate)")
    p.add_argument("--topology", help="topology file of --trajectory")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--model", help="model file (importance-sampling estimate)")
    p.add_argument("--system", default="alanine_dipeptide_vacuum")
    p.add_argument("--temperature", type=float, help="K (default: the system's)")
    p.add_argument("--n", type=int, default=10000, help="proposals (default %(default)s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_free_energy)

    p = sub.add_parser("evaluate", help="the ArBG paper's metrics (ESS, E-W2, T-W2, TICA-W2) against reference MD, with plots")
    _add_config(p)
    p.add_argument("--model", required=False, help="model file")
    p.add_argument("--reference", required=False, help="reference trajectory (e.g. long MD)")
    p.add_argument("--topology", required=False, help="topology file of the reference trajectory")
    p.add_argument("--system", default="alanine_dipeptide_vacuum", help="target system (default %(default)s)")
    p.add_argument("--temperature", type=float, help="target temperature in K (default: the system's)")
    p.add_argument("--n", type=int, default=10000, help="proposals (default %(default)s)")
    p.add_argument("--stride", type=int, default=1, help="reference frame stride")
    p.add_argument("--lag", type=int, default=100, help="TICA lag in reference frames (default %(default)s)")
    p.add_argument("--max-points", type=int, default=5000, help="points per set for exact optimal transport (default %(default)s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="arbg_evaluation", help="folder for evaluation.md and plots")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("umbrella", help="umbrella sampling on dihedrals + MBAR: a converged reference for rare basins")
    _add_config(p)
    p.add_argument("--system", default="alanine_dipeptide_vacuum", help="system name or peptide:SEQUENCE (default %(default)s)")
    p.add_argument("--dihedrals", nargs="+", default=["phi", "psi"], help="restrained dihedrals: phi, psi or i,j,k,l atom indices (default: phi psi)")
    p.add_argument("--windows", type=int, default=18, help="windows per dihedral on a regular grid (default %(default)s)")
    p.add_argument("--k", type=float, default=100.0, help="restraint force constant in kJ/mol/rad^2 (default %(default)s)")
    p.add_argument("--ps", type=float, default=200.0, help="production ps per window (default %(default)s)")
    p.add_argument("--report-ps", type=float, default=0.1, help="ps between saved frames (default %(default)s)")
    p.add_argument("--equilibration-ps", type=float, default=10.0, help="ps per window before saving (default %(default)s)")
    p.add_argument("--timestep-fs", type=float, default=1.0)
    p.add_argument("--temperature", type=float, help="K (default: the system's)")
    p.add_argument("--platform", default=None)
    p.add_argument("--workers", type=int, default=2, help="worker processes (default %(default)s)")
    p.add_argument("--save-positions", action="store_true", help="keep every frame's positions (e.g. as training data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mbar-samples", type=int, default=200, help="decorrelated frames per window used by MBAR, at most (default %(default)s)")
    p.add_argument("--export", type=int, default=0, help="write this many frames resampled from the unbiased distribution to frames.dcd (needs --save-positions)")
    p.add_argument("--export-region", choices=["all", "phi>0"], default="all", help="restrict --export to a region (default %(default)s)")
    p.add_argument("--output", default="arbg_umbrella", help="folder for windows and result.json (resumable)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_umbrella)

    p = sub.add_parser("demo", help="the quick-start job on alanine dipeptide (a few minutes on 2 cores)")
    p.add_argument("--output", default="arbg_demo", help="output folder (default %(default)s)")
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget in minutes (default %(default)s)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)
    return parser


_REQUIRED = {"train": ["trajectories", "topology"], "sample": ["model"], "evaluate": ["model", "reference", "topology"], "mcmc": ["model"]}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    sub = parser._subparsers._group_actions[0].choices[args.command]
    args = _apply_yaml(sub, args, argv)
    args.argv = argv[1:]
    missing = [k for k in _REQUIRED.get(args.command, []) if not getattr(args, k, None)]
    if missing:
        sub.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
    try:
        args.func(args)
    except (ValueError, OSError, MemoryError, RuntimeError) as exc:
        print(f"arbg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
