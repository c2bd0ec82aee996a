"""Every ``arbg`` command of the README parses: its options exist and pass the command's checks
(no command is run; files that earlier commands would write exist as empty placeholders)."""

import os
import re
import shlex

import pytest

from openmm_arbg.cli import parse_args

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def readme_commands():
    text = open(README).read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "arbg":
                commands.append(words[1:])
    return commands


def test_the_readme_has_arbg_commands():
    assert len(readme_commands()) >= 15


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for word in argv:
        if re.fullmatch(r"[\w./-]+\.(dcd|pdb)", word):  # an input an earlier README command writes
            os.makedirs(os.path.dirname(word) or ".", exist_ok=True)
            open(word, "w").close()
    try:
        args, module = parse_args(argv)
    except SystemExit as exc:  # a usage error: argparse printed why
        pytest.fail(f"arbg {shlex.join(argv)}: exit {exc.code}: {capsys.readouterr().err.strip()}")
    assert module is not None
