"""The ``arbg`` command line: ``md``, ``train``, ``self-train``, ``sample``, ``mcmc``, ``smc``, ``free-energy``,
``profile``, ``evaluate``, ``umbrella``, ``metadynamics`` and ``demo``, one module each. Commands parse options and call the
library; nothing here computes science.

Every command takes ``--config file.yaml`` (keys are the options' names with underscores, checked
like the options; the command line wins) and ``--threads`` (torch CPU threads).
"""

import os
import sys

from . import (common, demo, evaluate, free_energy, mcmc, md, metadynamics, peptide_md, profile, sample, self_train, smc, train,
               train_transferable, umbrella)

__all__ = ["main", "build_parser", "parse_args", "COMMANDS"]

COMMANDS = {module.NAME: module for module in (md, peptide_md, train, train_transferable, self_train, sample, mcmc, smc, free_energy, profile, evaluate, umbrella, metadynamics, demo)}


def build_parser():
    """The ``arbg`` parser: one subparser per module of :data:`COMMANDS`."""
    parser = common.ArgumentParser(
        prog="arbg",
        description="Autoregressive Boltzmann Generators for OpenMM: generate MD, train a model on it, and sample "
        "Boltzmann-distributed conformations exactly (importance sampling / Metropolis-Hastings).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=common.ArgumentParser)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        common.add_common_options(p)
        module.add_arguments(p)
    return parser


def parse_args(argv, parser=None):
    """The options of ``argv`` over those of its ``--config`` file, checked: returns the namespace
    and the command's module (None without a command). Usage errors raise ``SystemExit(2)``
    after printing the usage and the error."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        return args, None
    sub = parser._subparsers._group_actions[0].choices[args.command]
    args = common.apply_config(sub, args, argv[1:])
    common.resolve_shipped_model(args)
    module = COMMANDS[args.command]
    missing = [k for k in getattr(module, "REQUIRED", ()) if not getattr(args, k, None)]
    if missing:
        sub.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing) + " (an option or a key of --config)")
    if hasattr(module, "validate"):
        module.validate(args, sub)
    args.argv = argv[1:]
    return args, module


def main(argv=None):
    """Run ``arbg`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code: 0, or 2 for a
    usage error (printed with the usage) or a failure the user can fix (printed as one line)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    try:
        args, module = parse_args(argv, parser)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if module is None:
        parser.print_help()
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ.setdefault("OPENMM_CPU_THREADS", str(args.threads))  # each OpenMM CPU-platform Context
    try:
        module.run(args)
    except (ValueError, OSError, MemoryError, RuntimeError) as exc:
        print(f"arbg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what was saved (chunks, windows, checkpoints) stays; the same command resumes
        resumable = args.command in ("md", "peptide-md", "train", "train-transferable", "self-train", "umbrella", "metadynamics", "mcmc") or (args.command == "sample" and getattr(args, "output", None))
        advice = "run the same command again to resume from what was saved" if resumable else "nothing was saved"
        print(f"\narbg {args.command}: interrupted; {advice}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
