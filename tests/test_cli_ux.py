"""The command line as a user meets it: --version, fast --help (torch not imported), help text
and defaults on every option, progress bars on stderr only, -v/-q logging, a closed pipe, the
models listing, unknown model names."""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import edgessm
from edgessm import cli, progress
from edgessm.cli import common as cli_common

SRC = str(Path(edgessm.__file__).resolve().parents[1])


def _run(*args, **kw):
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "edgessm", *args], capture_output=True, text=True,
                          env=env, **kw)


def test_version(capsys):
    assert cli.main(["--version"]) == 0     # main returns argparse's exit status
    assert capsys.readouterr().out.strip() == f"edgessm {edgessm.__version__}"


def test_help_does_not_import_torch():
    code = ("import sys\nfrom edgessm.cli import main, build_parser\nfrom edgessm.cli.common import subparsers\n"
            "for argv in [['--help']] + [[c, '--help'] for c in subparsers(build_parser())]:\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stderr
    assert "deploy" in r.stdout and "export-c" in r.stdout


def test_every_option_has_help_and_shows_its_default():
    p = cli.build_parser()
    cmds = cli_common.subparsers(p)
    assert {"train", "eval", "deploy", "report", "demo", "export-c", "models"} <= set(cmds)
    for name, sp in cmds.items():
        text = sp.format_help()
        for a in sp._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help, f"{name} {a.option_strings or a.dest} has no help text"
            if a.option_strings and a.default not in (None, False, argparse.SUPPRESS):
                shown = sp._get_formatter()._get_help_string(a) % {"default": a.default}
                assert "default" in shown, f"{name} {a.option_strings}: default {a.default!r} not shown"
        assert "-v, --verbose" in text and "--no-progress" in text


def test_progress_off_with_json_or_no_progress_and_on_stderr(capsys):
    ns = argparse.Namespace
    cli_common.setup(ns(json=True, verbose=0, quiet=0, no_progress=False))
    assert not progress.enabled()
    cli_common.setup(ns(json=False, verbose=0, quiet=0, no_progress=True))
    assert not progress.enabled()
    cli_common.setup(ns(json=False, verbose=0, quiet=0, no_progress=False))
    progress.set_enabled(True)                       # as on a terminal
    import torch

    from edgessm.deploy import run_program as _run

    class Prog:
        target = "fake"

        def run(self, x):
            return torch.zeros(x.shape[0], 3, 4)
    out = _run(Prog(), torch.zeros(10, 3, 1), torch.zeros(10, dtype=torch.long), 4, False)
    cap = capsys.readouterr()
    assert out == {"accuracy": 1.0, "n": 10}
    assert cap.out == "" and "fake" in cap.err and "seq" in cap.err    # the bar went to stderr
    progress.set_enabled(False)
    _run(Prog(), torch.zeros(10, 3, 1), torch.zeros(10, dtype=torch.long), 4, False)
    assert capsys.readouterr().err == ""
    progress.set_enabled(None)


def test_verbosity_sets_logging_level():
    ns = argparse.Namespace
    lg = logging.getLogger("edgessm")
    for v, q, level in [(0, 0, logging.INFO), (1, 0, logging.DEBUG), (0, 1, logging.WARNING), (0, 2, logging.ERROR)]:
        cli_common.setup(ns(json=False, verbose=v, quiet=q, no_progress=False))
        assert lg.level == level
    cli_common.setup(ns(json=False, verbose=0, quiet=0, no_progress=False))
    p = cli.build_parser()
    a = p.parse_args(["-q", "models"])
    assert a.quiet == 1
    a = p.parse_args(["models", "-vv"])
    assert a.verbose == 2


def test_closed_pipe_no_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "edgessm", "info", "smnist"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    proc.stdout.close()                              # `| head -0`: the reader is gone before any output
    err = proc.stderr.read().decode()
    rc = proc.wait()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert rc == 141


def test_models_shows_what_eval_measures(capsys, monkeypatch, tmp_path):
    assert cli.main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    r = rows["fsdd01-ternary"]
    assert r["hw_test_accuracy"] is not None and r["test_n"] == 60
    from edgessm.data import sample
    with sample.fallback():                          # the whole fsdd-01 test set is in the sample
        assert cli.main(["eval", "fsdd01-ternary", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == r["test_n"] and ev["accuracy"] == pytest.approx(r["test_accuracy"], abs=1e-9)
    assert rows["smnist"]["test_n"] == 10000 and rows["smnist"]["hw_test_accuracy"] is None
    assert cli.main(["models"]) == 0
    assert "fsdd01-ternary" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["eval", "nosuch"], ["stream", "nosuch"], ["info", "nosuch"], ["deploy", "nosuch", "--target", "cpu"],
    ["report", "--model", "nosuch"], ["export-c", "nosuch", "--out", "OUT"], ["bench", "stream", "nosuch"],
    ["quantize", "nosuch", "--out", "OUT"]])
def test_unknown_model_fails_at_once(argv, capsys, monkeypatch, tmp_path):
    import edgessm.data
    import edgessm.report

    def boom(*a, **k):
        raise AssertionError("work started before the model name was checked")
    monkeypatch.setattr(edgessm.data, "load_task", boom)
    monkeypatch.setattr(edgessm.report, "build_report", boom)
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuch" in err[0] and err[0].startswith("edgessm: error:")
    assert list(tmp_path.iterdir()) == []
