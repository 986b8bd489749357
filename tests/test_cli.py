import subprocess
import sys

import pytest

from easytune import cli


def test_top_level_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "easytune", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name, _, _ in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("entry", cli.COMMANDS, ids=[c[0] for c in cli.COMMANDS])
def test_every_command_has_help_with_defaults(entry, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(entry[0].split() + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m easytune {entry[0]}")
    if "--" in out.split("options:")[-1].replace("--help", ""):
        assert "default" in out


def test_unknown_command_is_one_clear_line(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
