"""Command-line basics: light imports, help on no arguments, exit codes, the ERROR line.

The import checks run in a fresh interpreter and look at ``sys.modules`` (not at timings):
keras, tensorflow, torch (and jax) must not be imported by ``import mri_hsynex``, by the
dispatcher, or by building any command's parser / printing its ``--help``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mri_hsynex
from mri_hsynex.cli import common
from mri_hsynex.cli.main import COMMANDS
from mri_hsynex.errors import HsynexError

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("keras", "tensorflow", "torch", "jax")


def run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "mri_hsynex", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)


PROBE = """
import contextlib, importlib, io, json, sys
HEAVY = {heavy!r}
def heavy():
    return sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)
import mri_hsynex, mri_hsynex.cli.main
out = {{"after_import": heavy()}}
module = importlib.import_module("mri_hsynex.cli." + {module!r})
out["after_module"] = heavy()
module.build_parser().format_help()
out["after_parser"] = heavy()
with contextlib.redirect_stdout(io.StringIO()) as text:
    try:
        code = mri_hsynex.cli.main.main([{command!r}, "--help"])
    except SystemExit as stop:
        code = stop.code
out["help_exit"], out["help_text"] = code, text.getvalue()
with contextlib.redirect_stdout(io.StringIO()) as text:
    code = mri_hsynex.cli.main.main([{command!r}])
out["noargs_exit"], out["noargs_text"] = code, text.getvalue()
out["after_help"] = heavy()
print(json.dumps(out))
"""


def test_import_leaves_heavy_modules_out():
    result = run_python("import sys, mri_hsynex, mri_hsynex.cli.main, mri_hsynex.cli.common\n"
                        "import mri_hsynex.errors, mri_hsynex.constants, mri_hsynex.labels\n"
                        "import mri_hsynex.backend\n"
                        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_backend_configure_sets_backend_before_keras():
    result = run_python("import os, sys\nos.environ.pop('KERAS_BACKEND', None)\n"
                        "from mri_hsynex.backend import configure\n"
                        "print(configure(), 'keras' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tensorflow", "False"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_help_is_light(command):
    module = COMMANDS[command][0]
    result = run_python(PROBE.format(heavy=HEAVY, module=module, command=command))
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for stage in ("after_import", "after_module", "after_parser", "after_help"):
        assert out[stage] == [], f"{command}: {stage} imported {out[stage][:5]}"
    assert out["help_exit"] == 0
    assert "usage:" in out["help_text"]
    # FreeSurfer convention: a command called with no arguments prints its help and exits 1
    assert out["noargs_exit"] == 1
    assert "usage:" in out["noargs_text"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_module_interface(command):
    import importlib

    module = importlib.import_module(f"mri_hsynex.cli.{COMMANDS[command][0]}")
    assert callable(module.build_parser) and callable(module.main)
    parser = module.build_parser()
    options = {opt for action in parser._actions for opt in action.option_strings}
    assert "--debug" in options, f"{command} lacks --debug"
    assert parser.prog.endswith(command) or command in parser.prog


def test_no_arguments_prints_help_and_exits_1():
    result = run_cli()
    assert result.returncode == 1
    assert "usage: mri_hsynex <command>" in result.stdout
    for command in COMMANDS:
        assert command in result.stdout


def test_help_flag_exits_0():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "commands:" in result.stdout


def test_unknown_command_exits_2():
    result = run_cli("segmnet")
    assert result.returncode == 2
    assert result.stderr.startswith("ERROR: unknown command: segmnet")
    assert "Traceback" not in result.stderr


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == mri_hsynex.__version__


def test_console_script_installed():
    script = Path(sys.executable).parent / "mri_hsynex"
    if not script.exists():
        pytest.skip("mri_hsynex console script not installed in this environment")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == mri_hsynex.__version__


# --- the error runner (cli.common.run) ------------------------------------------------------------
def tiny_parser():
    parser = common.new_parser("mri_hsynex demo", "test parser")
    parser.add_argument("--i", required=True)
    return parser


def failing(args):
    raise HsynexError("file not found", args.i)


def test_user_error_is_one_line_and_exit_1(capsys):
    assert common.run(tiny_parser, failing, ["--i", "/no/scan.mgz"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "ERROR: file not found: /no/scan.mgz\n"
    assert captured.out == ""


def test_debug_shows_the_traceback():
    with pytest.raises(HsynexError):
        common.run(tiny_parser, failing, ["--i", "/no/scan.mgz", "--debug"])


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as stop:
        common.run(tiny_parser, failing, ["--bogus"])
    assert stop.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_runner_no_arguments_and_success(capsys):
    assert common.run(tiny_parser, failing, []) == 1
    assert "usage:" in capsys.readouterr().out
    assert common.run(tiny_parser, lambda args: None, ["--i", "x"]) == 0
    assert common.run(tiny_parser, lambda args: 3, ["--i", "x"]) == 3


def test_error_without_path():
    err = HsynexError("no subjects given")
    assert str(err) == "no subjects given" and err.path is None
    err = HsynexError("bad", Path("/a/b.mgz"))
    assert str(err) == "bad: /a/b.mgz" and err.path == "/a/b.mgz"


def test_cli_error_through_a_real_command(tmp_path):
    """A user mistake through a real command: one ERROR line naming the file, no traceback."""
    missing = tmp_path / "missing.stats"
    result = run_cli("table", "--help")
    assert result.returncode == 0
    result = run_cli("groupstats", "--table", str(missing), "--groups", str(missing),
                     "--o", str(tmp_path / "out"))
    if result.returncode == 2:
        pytest.skip(f"groupstats flags changed: {result.stderr.splitlines()[-1:]}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("ERROR: ")
    assert str(missing) in lines[-1]
    assert "Traceback" not in result.stderr
