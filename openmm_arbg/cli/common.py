"""What every ``arbg`` command shares: the parser class, ``--config`` YAML files checked like
flags, ``--threads``, options generated from dataclass fields, the system of a model, and
printing warnings."""

import argparse
import dataclasses
import difflib
import math
import os
import re
import sys

__all__ = [
    "ArgumentParser",
    "add_common_options",
    "add_options",
    "add_dataclass_options",
    "dataclass_values",
    "apply_config",
    "system_for_model",
    "print_warnings",
    "temperature_K",
    "target_for_model",
    "positive_float",
    "non_negative_float",
    "positive_int",
    "non_negative_int",
    "platform_name",
    "check_state_options",
    "user_states",
    "merge_states",
]

# flags that were renamed; an unrecognised old one gets a hint
RENAMED = {}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with hints for renamed options."""

    def error(self, message):
        if "unrecognized arguments" in message:
            hints = [f"{old} is now {new}" for old, new in RENAMED.items() if re.search(rf"(^|\s){re.escape(old)}(=|\s|$)", message)]
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)


def add_common_options(parser):
    parser.add_argument("--config", help="YAML file of settings: keys are the option names with underscores (e.g. batch_size); "
                        "options on the command line win")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads, and threads of each OpenMM CPU-platform Context unless OPENMM_CPU_THREADS is "
                        "set (default: torch's choice; OpenMM 1 per Context, so that runs with one seed are reproducible)")


def _checked_type(kind, test, description):
    """An argparse ``type`` that converts with ``kind`` and refuses values failing ``test``, saying
    what is allowed (also used for the values of a ``--config`` file)."""

    def convert(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {description}; got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {description}; got {text!r}")
        return value

    convert.kind, convert.description, convert.__name__ = kind, description, description
    return convert


positive_float = _checked_type(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
non_negative_float = _checked_type(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
positive_int = _checked_type(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _checked_type(int, lambda v: v >= 0, "an integer >= 0")


def platform_name(text):
    """argparse ``type`` of ``--platform``: an OpenMM platform available here."""
    from ..physics import check_platform

    try:
        return check_platform(text, option="")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None


platform_name.description = "an OpenMM platform available here"


def torch_device(text):
    """argparse ``type`` of ``--device``: a torch device that exists here (cpu, cuda, cuda:N)."""
    if text == "cpu":  # the default: no need to import torch while parsing
        return text
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device: give cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available to torch here; use --device cpu") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text}: give cpu, cuda or cuda:N")
    return text


torch_device.description = "a torch device available here (cpu, cuda, cuda:N)"

SYSTEM_FORMS = "a built-in system name, peptide:SEQUENCE, system.xml:structure.pdb or structure.pdb[:forcefield.xml,...]"

# options several commands take, by name: (flags, add_argument keywords)
SHARED_OPTIONS = {
    "model": (("--model",), dict(help="model file (model.safetensors), or the name of a model shipped with the package")),
    "target": (("--system",), dict(help=f"target: {SYSTEM_FORMS} (default: the built-in system of the model's molecule)")),
    "system": (("--system",), dict(default="alanine_dipeptide_vacuum", help=f"{SYSTEM_FORMS} (default %(default)s)")),
    "temperature": (("--temperature",), dict(type=positive_float, help="target temperature in K (default: the system's)")),
    "proposal_temperature": (("--proposal-temperature",), dict(
        type=positive_float, default=1.0, help="softmax temperature of the proposal; results stay exact at any value (default %(default)s)")),
    "workers": (("--workers",), dict(type=positive_int, default=2, help="processes for OpenMM energies (default %(default)s)")),
    "platform": (("--platform",), dict(type=platform_name, default=None, help="OpenMM platform (default: the fastest for this System in a short speed test: Reference, CPU, or CUDA where present)")),
    "timestep_fs": (("--timestep-fs",), dict(type=positive_float, default=1.0, help="time step in fs; systems are unconstrained (default %(default)s)")),
    "seed": (("--seed",), dict(type=int, default=0, help="random seed (default %(default)s)")),
    "device": (("--device",), dict(type=torch_device, default="cpu", help="torch device of the network: cpu, cuda or cuda:N (default %(default)s); OpenMM energies run on the platform "
                   "a speed test picks for the System, or on --platform where the command has it")),
    "quiet": (("--quiet",), dict(action="store_true", help="no progress bar")),
}


def add_options(parser, *names, **changes):
    """Add shared options (:data:`SHARED_OPTIONS`) by name; ``changes`` maps a name to keywords
    that replace its defaults (e.g. ``workers=dict(default=1)``)."""
    for name in names:
        flags, kwargs = SHARED_OPTIONS[name]
        parser.add_argument(*flags, **dict(kwargs, **changes.get(name, {})))


# ---------------------------------------------------------------------- options from dataclasses
def _docstring_parameters(cls):
    """Parameter descriptions and types of a numpy-style class docstring: name -> (type text, description)."""
    doc = cls.__doc__ or ""
    match = re.search(r"\n\s*Parameters\n\s*-+\n(.*?)(\n\s*\n\s*[A-Z][a-z]+\n\s*-+\n|$)", doc, re.S)
    if not match:
        return {}
    lines = match.group(1).split("\n")
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    out, names, kind, text = {}, [], "", []

    def flush():
        description = " ".join(text)
        parts = description.rstrip(".").split(", ")  # "a, b : int / A, B." describes a and b in turn
        for i, name in enumerate(names):
            out[name] = (kind, parts[i] if len(names) > 1 and len(parts) == len(names) else description)

    for line in lines:
        if not line.strip():
            continue
        if len(line) - len(line.lstrip()) == indent:
            flush()
            head, _, kind = line.strip().partition(" : ")
            names, text = [n.strip() for n in head.split(",")], []
        else:
            text.append(line.strip())
    flush()
    return out


def _field_default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_dataclass_options(parser, classes, skip=()):
    """Add a ``--field-name`` option for every field of the dataclasses, in an argument group per
    class; a name several classes share gets one option, which sets them all. Types come from the
    defaults, choices from a ``{"a", "b"}`` type in the docstring, help from its parameter
    descriptions. Every option's default is None: :func:`dataclass_values` leaves the fields not
    given at the dataclass's defaults."""
    options = {}  # field name -> (group, kwargs, help parts)
    for cls in classes:
        docs = _docstring_parameters(cls)
        group = parser.add_argument_group(f"{cls.__name__} settings ({cls.__module__})")
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            kind, text = docs.get(f.name, ("", ""))
            if f.name in options:
                options[f.name][2].append(f"also sets {cls.__name__}.{f.name}" + (f": {text}" if text else ""))
                continue
            default = _field_default(f)
            kwargs = dict(dest=f.name, default=None)
            choices = re.findall(r'"([^"]+)"', kind) if kind.startswith("{") else []
            if isinstance(default, bool):
                kwargs["action"] = argparse.BooleanOptionalAction
            elif isinstance(default, (list, tuple)):
                kwargs.update(nargs="*", type=type(default[0]) if default else str)
            else:
                kwargs["type"] = type(default) if default is not None else str
                if choices:
                    kwargs["choices"] = choices
            options[f.name] = (group, kwargs, [(text or f.name.replace("_", " ")).rstrip(".") + f" (default {default!r})"])
    for name, (group, kwargs, parts) in options.items():
        group.add_argument("--" + name.replace("_", "-"), help="; ".join(parts).replace("%", "%%"), **kwargs)


def dataclass_values(cls, args, names=None):
    """The dataclass built from the options of :func:`add_dataclass_options` that were given
    (the others keep the dataclass's defaults)."""
    names = names if names is not None else [f.name for f in dataclasses.fields(cls)]
    return cls(**{n: getattr(args, n) for n in names if getattr(args, n, None) is not None})


# ---------------------------------------------------------------------- YAML
def _is_flag(action):
    return isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction))


def _convert(parser, action, value, where):
    """One YAML value for ``action``, checked and converted as the command line would."""
    typ = action.type or str
    if value is None:
        parser.error(f"{where} has no value")
    if isinstance(value, (list, dict)):
        parser.error(f"{where} must be a single value; got {value!r}")
    if isinstance(value, bool) and typ is not bool:
        parser.error(f"{where} must be {_type_name(typ)}; got {value!r}")
    try:
        if getattr(typ, "kind", typ) is int and isinstance(value, float):
            raise ValueError
        converted = typ(value) if (isinstance(value, str) or typ is not str) else str(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        parser.error(f"{where} must be {_type_name(typ)}; got {value!r}")
    if action.choices is not None and converted not in action.choices:
        parser.error(f"{where} must be one of {', '.join(map(str, action.choices))}; got {value!r}")
    return converted


def _type_name(typ):
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(typ) or getattr(typ, "description", None) or getattr(typ, "__name__", str(typ))


def apply_config(parser, args, argv):
    """Settings from ``args.config`` (YAML) under those given on the command line.

    Keys are the options' dest names (``batch_size`` for ``--batch-size``). An unknown key or a
    value of the wrong type is a usage error (exit code 2) that names the key.
    """
    if not getattr(args, "config", None):
        return args
    import yaml

    path = args.config
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except OSError as exc:
        parser.error(f"cannot read the config file {path}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        parser.error(f"{path} is not valid YAML: {getattr(exc, 'problem', None) or ' '.join(str(exc).split())}{where}")
    values = values or {}
    if not isinstance(values, dict):
        parser.error(f"{path} must hold a mapping of setting names to values")
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    namespace = argparse.Namespace()
    for key, value in values.items():
        if key not in actions:
            close = difflib.get_close_matches(str(key).replace("-", "_"), actions, n=1)
            parser.error(
                f"{path}: unknown setting {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; known settings: {', '.join(sorted(actions))}"
            )
        action, where = actions[key], f"{path}: {key}"
        if _is_flag(action):
            if not isinstance(value, bool):
                parser.error(f"{where} must be true or false; got {value!r}")
            converted = value if not isinstance(action, argparse._StoreFalseAction) else not value
        elif action.nargs in ("+", "*"):
            items = value if isinstance(value, list) else [value]
            if action.nargs == "+" and not items:
                parser.error(f"{where} needs at least one value")
            converted = [_convert(parser, action, v, where) for v in items]
        else:
            converted = _convert(parser, action, value, where)
        setattr(namespace, key, converted)
    namespace = parser.parse_args(argv, namespace=namespace)
    namespace.command = args.command
    return namespace


# ---------------------------------------------------------------------- systems
def _peptide_name(graph):
    """``peptide:SEQUENCE`` if the molecule is Ace-<standard residues>-Nme, else None."""
    from ..simulation.peptides import THREE_TO_ONE

    names = [name for name, _ in graph.residues()]
    if len(names) < 3 or names[0] != "ACE" or names[-1] != "NME" or not all(n in THREE_TO_ONE for n in names[1:-1]):
        return None
    return "peptide:" + "".join(THREE_TO_ONE[n] for n in names[1:-1])


def system_for_model(model, name=None, option="--system", out=None):
    """The MolecularSystem to run a model against: ``name`` if given (checked to be the model's
    molecule), otherwise the built-in system whose molecule is the model's (same fingerprint);
    a ``ValueError`` asking for ``option`` if there is none."""
    from ..molecule.topology import MolecularGraph
    from ..simulation.systems import SYSTEMS, build_system

    if name:
        ms = build_system(name)
        model.check_topology(ms.topology)
        return ms
    candidates = list(SYSTEMS)
    peptide = _peptide_name(model.graph)
    if peptide:
        candidates.append(peptide)
    matches = []
    for candidate in candidates:
        ms = build_system(candidate)
        if MolecularGraph.from_topology(ms.topology).fingerprint() == model.fingerprint():
            matches.append(ms)
    if not matches:
        raise ValueError(
            f"the model's molecule ({model.n_atoms} atoms) is none of the built-in systems ({', '.join(candidates)}); "
            f"give the target with {option} ({SYSTEM_FORMS})"
        )
    others = [m.name for m in matches[1:]]
    print(
        f"{option} not given: using {matches[0].name}, the built-in system of the model's molecule"
        + (f" (also: {', '.join(others)})" if others else ""),
        file=out or sys.stdout,
    )
    other_md = _md_of_another_system(model, matches[0])
    if other_md:
        print(f"warning: {other_md}; give {option} (and --temperature) for the System the MD simulated", file=out or sys.stdout)
    return matches[0]


def _md_of_another_system(model, ms):
    """A sentence if the MD the model was trained on (``arbg train`` records it from ``arbg md``'s
    settings) simulated another System than ``ms``, else None."""
    from ..physics import system_fingerprint

    md = [m for m in model.metadata.get("md", []) if isinstance(m, dict) and m.get("system_sha256")]
    if not md or any(m["system_sha256"] == system_fingerprint(ms.system) for m in md):
        return None
    runs = ", ".join(sorted({f"{m.get('system', '?')} at {m.get('temperature_K', float('nan')):g} K" for m in md}))
    return (f"the model was trained on MD of {runs}, another System than {ms.name} (another force field or other "
            f"parameters): weights and acceptances below are against {ms.name}")


def resolve_shipped_model(args):
    """``--model NAME`` (and ``--init-from NAME``) for a model shipped with the package
    (``openmm_arbg.pretrained``) when no file of that name exists: replaced by the shipped file's path."""
    for option in ("model", "init_from"):
        name = getattr(args, option, None)
        if name and not os.path.exists(name):
            from ..pretrained import PRETRAINED, pretrained_path

            if name in PRETRAINED:
                setattr(args, option, pretrained_path(name))


def load_model(args):
    """The ``--model`` of a command as an :class:`~openmm_arbg.ArBG`. A transferable model (many
    peptides) is turned into the model of ``--system`` (e.g. ``peptide:KT``), zero-shot."""
    from ..arbg import ArBG
    from ..transferable import TransferableArBG, is_transferable_file

    if not is_transferable_file(args.model):
        return ArBG.load(args.model, device=args.device)
    if not getattr(args, "system", None):
        raise ValueError(f"{args.model} is a transferable model of many peptides: say which with --system "
                         "(peptide:SEQUENCE, a PDB, or system.xml:structure.pdb)")
    from ..simulation.systems import build_system

    from ..molecule.topology import MolecularGraph

    ms = build_system(args.system)
    reference = ms.positions_nm()
    # kept in a file named by content (openmmtools moves and resumes refer to the model's file)
    path = zero_shot_model_path(args.model, MolecularGraph.from_topology(ms.topology).fingerprint(), reference)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        TransferableArBG.load(args.model).for_topology(ms.topology, reference).save(path)
    print(f"{args.model}: transferable model, used zero-shot for {ms.name} (saved as {path}; pass it as --model to "
          "skip this step)", file=sys.stdout)
    return ArBG.load(path, device=args.device)


def zero_shot_model_path(transferable_path, fingerprint, reference_positions):
    """Where a zero-shot model is kept: a cache folder (``$OPENMM_ARBG_CACHE``, else
    ``$XDG_CACHE_HOME/openmm_arbg`` or ``~/.cache/openmm_arbg``), named by the transferable
    model's content, the molecule and the reference structure, so the same command finds it again."""
    import hashlib

    import numpy as np

    from ..utils import file_sha256

    root = os.environ.get("OPENMM_ARBG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "openmm_arbg")
    ref = hashlib.sha256(np.ascontiguousarray(np.round(reference_positions, 6)).tobytes()).hexdigest()
    return os.path.join(root, "zero_shot", f"{file_sha256(transferable_path)[:16]}_{fingerprint[:16]}_{ref[:8]}.safetensors")


def stop_if_interrupted(trainer, n_steps):
    """After a trainer's ``fit``: if Ctrl-C/SIGTERM stopped it, say where its checkpoint and best
    model are and raise ``KeyboardInterrupt`` (the command exits 130 and can be run again)."""
    if trainer.interrupted:
        print(f"{trainer.interrupted} at step {trainer.step}/{n_steps}: checkpoint written to {trainer.checkpoint_path}; "
              f"the best model so far is {trainer.model_path}")
        raise KeyboardInterrupt


def restart_or_resume(output, restart, files):
    """``--restart``: delete a trainer's ``files`` in ``output`` (start over); otherwise say that
    an existing checkpoint there will be resumed."""
    import os

    checkpoint = os.path.join(output, "checkpoint.safetensors")
    if restart:
        for name in ("checkpoint.safetensors", *files):
            if os.path.exists(os.path.join(output, name)):
                os.remove(os.path.join(output, name))
    elif os.path.exists(checkpoint):
        print(f"resuming from {checkpoint}")


def print_warnings(lines, out=None):
    """Print warning lines (from :func:`openmm_arbg.analysis.diagnostics.warning_lines`)."""
    for line in lines:
        print(f"warning: {line}", file=out or sys.stdout)


def check_start_options(args, parser):
    """``--start-from`` and ``--start-topology`` name existing files, and the second comes with the first."""
    for name, path in (("--start-from", args.start_from), ("--start-topology", args.start_topology)):
        if path is not None and not os.path.isfile(path):
            parser.error(f"{name} {path}: no such file")
    if args.start_topology and not args.start_from:
        parser.error("--start-topology needs --start-from")


def load_start_trajectory(ms, path, topology_path=None, option="--start-from"):
    """The mdtraj trajectory ``path`` of the molecule ``ms`` (topology: ``topology_path``, else
    topology.pdb beside the file, else the system's own), with a clear error if it cannot be read
    or holds another number of atoms."""
    import mdtraj

    from ..utils import load_trajectory

    if topology_path is None and os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(path)), "topology.pdb")):
        topology_path = os.path.join(os.path.dirname(os.path.abspath(path)), "topology.pdb")
    top = topology_path if topology_path else mdtraj.Topology.from_openmm(ms.topology)
    try:
        traj = load_trajectory(path, top=top)
    except Exception as exc:
        raise ValueError(f"cannot read {option} {path} ({type(exc).__name__}: {exc}); give a trajectory mdtraj "
                         "reads and, if its folder has no topology.pdb, --start-topology") from None
    if traj.n_atoms != ms.n_atoms:
        raise ValueError(f"{option} {path} has {traj.n_atoms} atoms, the system {ms.name} {ms.n_atoms}: "
                         "give a trajectory of the same molecule")
    return traj


def topology_file(topology, trajectory, option="--topology"):
    """The topology file of ``trajectory``: ``topology`` if given, else the ``topology.pdb`` that
    arbg md writes beside it. ``FileNotFoundError`` naming ``option`` if there is none."""
    if topology:
        if not os.path.isfile(topology):
            raise FileNotFoundError(f"topology file {topology} does not exist ({option})")
        return topology
    beside = os.path.join(os.path.dirname(os.path.abspath(trajectory)), "topology.pdb")
    if not os.path.isfile(beside):
        raise FileNotFoundError(f"give the topology file of {trajectory} with {option} (there is no topology.pdb beside it)")
    return beside


def temperature_K(args, molecular_system):
    """``--temperature`` if given, else the system's temperature, in K."""
    import openmm.unit as unit

    return args.temperature or molecular_system.temperature.value_in_unit(unit.kelvin)


def target_for_model(model, args):
    """(MolecularSystem, temperature in K) of ``--system`` (default: the model's molecule's
    built-in system, :func:`system_for_model`) and ``--temperature``."""
    ms = system_for_model(model, args.system)
    T = temperature_K(args, ms)
    md_temperatures = sorted({float(m["temperature_K"]) for m in model.metadata.get("md", [])
                              if isinstance(m, dict) and isinstance(m.get("temperature_K"), (int, float))})
    if not args.temperature and md_temperatures and all(abs(t - T) > 1e-6 for t in md_temperatures):
        print(f"note: the model's MD ran at {', '.join(f'{t:g}' for t in md_temperatures)} K, the target is at {T:g} K "
              "(give --temperature for another)")
    # printed with --quiet too: what the numbers that follow are measured against
    print(f"target: {ms.name} ({ms.n_atoms} atoms, {ms.system.getNumForces()} forces), {T:g} K"
          + ("" if args.system else "; give --system and --temperature if the model's MD used another force field or temperature"))
    return ms, T


# ---------------------------------------------------------------------- states
def check_state_options(args, parser):
    """``--state NAME=EXPRESSION`` in that form (a usage error otherwise)."""
    for state in args.state:
        name, sep, expression = state.partition("=")
        if not sep or not name.strip() or not expression.strip():
            parser.error(f"--state {state!r}: write NAME=EXPRESSION, e.g. 'alphaR=phi2 < 0 and -120 <= psi2 <= 50'")


def user_states(args, topology):
    """(name -> expression or callable, DiscoveredStates or None) from ``--state`` (each expression
    checked against the molecule) and ``--states-file`` (checked to belong to it)."""
    from ..analysis.states import StateExpression

    given = {}
    for text in args.state:
        name, _, expression = (part.strip() for part in text.partition("="))
        StateExpression(expression, topology)  # raises for unknown dihedrals or bad syntax
        given[name] = expression
    if not getattr(args, "states_file", None):
        return given, None
    from ..analysis.state_discovery import DiscoveredStates

    discovered = DiscoveredStates.load(args.states_file)
    discovered.check_topology(topology)
    return merge_states(given, discovered), discovered


def merge_states(given, discovered):
    """``--state`` expressions and discovered states in one dict (their names must differ)."""
    found = discovered.states()
    clash = sorted(set(given) & set(found))
    if clash:
        raise ValueError(f"--state names {', '.join(clash)} are also names of the discovered states; name them otherwise")
    return {**found, **given}
