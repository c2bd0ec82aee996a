"""One set of setting names: `arbg train` options and YAML keys are the fields of ModelConfig,
NetworkConfig and TrainingConfig, checked alike."""

import argparse
import dataclasses

import pytest

from openmm_arbg.arbg import ModelConfig
from openmm_arbg.cli import COMMANDS, build_parser, main, parse_args
from openmm_arbg.cli import train as train_command
from openmm_arbg.cli.common import add_dataclass_options, dataclass_values
from openmm_arbg.model.network import NetworkConfig
from openmm_arbg.training import TrainingConfig

CLASSES = (ModelConfig, NetworkConfig, TrainingConfig)


def _fields():
    return [(cls, f) for cls in CLASSES for f in dataclasses.fields(cls) if f.name not in train_command.DERIVED_NETWORK_FIELDS]


def _subparser(name):
    return build_parser()._subparsers._group_actions[0].choices[name]


def test_every_field_has_a_flag():
    options = {s: a for a in _subparser("train")._actions for s in a.option_strings}
    for cls, f in _fields():
        flag = "--" + f.name.replace("_", "-")
        assert flag in options, f"{cls.__name__}.{f.name} has no {flag}"
        assert options[flag].dest == f.name and options[flag].help
    for name in train_command.DERIVED_NETWORK_FIELDS:  # set from the data, not by the user
        assert "--" + name.replace("_", "-") not in options
    assert {"--trajectories", "--topology", "--output", "--device", "--threads", "--restart", "--config"} <= set(options)


def test_every_command_takes_config_and_threads():
    for name in COMMANDS:
        options = {s for a in _subparser(name)._actions for s in a.option_strings}
        assert {"--config", "--threads"} <= options, name


def _value_for(default):
    """A valid value other than the default."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, str):
        return {"internal": "cartesian", "learned": "rope", "sibling": "parent"}[default]
    if isinstance(default, float):
        return 0.5 if default != 0.5 else 0.25
    if isinstance(default, list):
        return ["phi", "psi"]
    return default + 2 if default else 8


def test_yaml_with_field_names_sets_every_field(tmp_path):
    values = {}
    for cls, f in _fields():
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        values[f.name] = _value_for(default)
    values.update(representation="internal")  # first_torsions needs the internal representation
    values.update(n_head=2, d_model=32, n_layer=3, warmup_steps=3, n_steps=40, validation_fraction=0.2)
    config = tmp_path / "train.yaml"
    config.write_text("".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in values.items()) + "trajectories: [a.dcd, b.dcd]\ntopology: t.pdb\nthreads: 3\n")
    args, module = parse_args(["train", "--config", str(config), "--n-layer", "5"])
    assert module is train_command and args.trajectories == ["a.dcd", "b.dcd"] and args.topology == "t.pdb" and args.threads == 3
    model, network, training = train_command.settings(args)
    assert network.n_layer == 5  # the command line wins over the file
    values["n_layer"] = 5
    for obj in (model, network, training):
        for f in dataclasses.fields(obj):
            if f.name in values:
                assert getattr(obj, f.name) == values[f.name], f.name
    assert model.seed == training.seed == values["seed"]  # --seed / seed sets both


def test_yaml_numbers_as_strings_and_unset_fields_keep_defaults(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 1e-3\nn_bins: 64\n")  # YAML reads 1e-3 as a string; it is converted like a flag
    args, _ = parse_args(["train", "--config", str(config), "--trajectories", "x.dcd", "--topology", "t.pdb"])
    model, network, training = train_command.settings(args)
    assert training.learning_rate == 1e-3 and model.n_bins == 64
    assert training.batch_size == TrainingConfig().batch_size and network.d_model == NetworkConfig().d_model


@pytest.mark.parametrize(
    "text, words",
    [
        ("batch-size: 32\n", ["unknown setting 'batch-size'", "did you mean 'batch_size'", "known settings:", "learning_rate"]),
        ("layers: 2\n", ["unknown setting 'layers'", "known settings:", "n_layer"]),
        ("n_steps: ten\n", ["n_steps must be an integer", "'ten'"]),
        ("n_layer: 2.5\n", ["n_layer must be an integer"]),
        ("learning_rate: fast\n", ["learning_rate must be a number"]),
        ("representation: polar\n", ["representation must be one of internal, cartesian"]),
        ("quiet: yes please\n", ["quiet must be true or false"]),
        ("trajectories: {a: 1}\n", ["trajectories must be a single value"]),
        ("n_bins: 1\n", ["n_bins must be an integer >= 2"]),  # the dataclass's own check
        ("- a\n- b\n", ["must hold a mapping"]),
    ],
)
def test_bad_yaml_is_a_usage_error_naming_the_key(tmp_path, capsys, text, words):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["train", "--config", str(config), "--trajectories", "x.dcd", "--topology", "t.pdb"]) == 2
    err = capsys.readouterr().err
    assert "usage: arbg train" in err
    for word in words:
        assert word in err, (word, err)


def test_bad_flags_and_renamed_flags(capsys):
    assert main(["train", "--n-steps", "ten", "--trajectories", "x.dcd", "--topology", "t.pdb"]) == 2
    assert "--n-steps: invalid int value" in capsys.readouterr().err
    assert main(["train", "--dropout", "1.5", "--trajectories", "x.dcd", "--topology", "t.pdb"]) == 2
    assert "dropout must be in [0, 1)" in capsys.readouterr().err
    assert main(["train", "--bins", "64", "--steps", "3", "--trajectories", "x.dcd", "--topology", "t.pdb"]) == 2
    err = capsys.readouterr().err
    assert "--bins is now --n-bins" in err and "--steps is now --n-steps" in err
    assert main(["train", "--config", "/nonexistent/c.yaml"]) == 2
    assert "cannot read the config file" in capsys.readouterr().err
    assert main(["train", "--trajectories", "x.dcd", "--trajectory-weights", "1", "2", "--topology", "t.pdb"]) == 2
    assert "2 values for 1 trajectories" in capsys.readouterr().err
    assert main(["train", "--trajectories", "x.dcd", "--trajectory-weights", "nan", "--topology", "t.pdb"]) == 2
    assert "finite, >= 0" in capsys.readouterr().err


def test_generated_options_for_bool_list_choice_and_grouped_fields():
    @dataclasses.dataclass
    class Toy:
        """Toy settings.

        Parameters
        ----------
        width, depth : int
            How wide, how deep.
        mode : {"a", "b"}
            The mode.
        verbose : bool
            Say more.
        sizes : list of int
        """

        width: int = 3
        depth: int = 2
        mode: str = "a"
        verbose: bool = False
        sizes: list = dataclasses.field(default_factory=lambda: [1, 2])

    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, [Toy])
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["width"].startswith("How wide") and helps["depth"].startswith("how deep") and "(default 2)" in helps["depth"]
    assert helps["sizes"].startswith("sizes")
    toy = dataclass_values(Toy, parser.parse_args(["--mode", "b", "--verbose", "--sizes", "4", "5", "--depth", "7"]))
    assert toy == Toy(width=3, depth=7, mode="b", verbose=True, sizes=[4, 5])
    assert dataclass_values(Toy, parser.parse_args(["--no-verbose"])).verbose is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])
