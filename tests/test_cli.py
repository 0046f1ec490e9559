"""`ace` errors: a library error prints one line naming the problem and exits non-zero; `--debug` shows the traceback;
a run checks what it needs before its first expensive step."""

import subprocess
import sys
from pathlib import Path

import pytest

from ace_interp import cli
from ace_interp.evaluation import protocol

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "mquake_cf3k_small.json"


def one_error_line(capsys) -> str:
    """The error: one line, the last on stderr (progress bars of loading may come before it), no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "error" in line.lower() or "Traceback" in line] == err[-1:], err
    return err[-1]


def test_a_missing_model_folder_is_one_line_and_exit_2():
    """As a user runs it (a subprocess, with its own logging on stderr)."""
    out = subprocess.run([sys.executable, "-m", "ace_interp.cli", "info", "./no/such/model"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["ace info: error: model path ./no/such/model does not exist "
                                               "(--debug shows the traceback)"]


def test_an_unknown_model_name_is_one_line(capsys):
    assert cli.main(["info", "smollm3-135m"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("ace info: error: cannot load 'smollm3-135m'") and "Named models:" in line


def test_a_bad_request_is_one_line(tiny_model_dir, capsys):
    argv = ["edit", "--model", str(tiny_model_dir("gpt2")), "--prompt", "The capital of France is",
            "--subject", "Germany", "--target-new", "Rome"]
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith("ace edit: error:") and "'Germany'" in line


@pytest.mark.parametrize("override, problem", [
    ("layer=99", "rome.layer = 99, but the model has 3 layers (0..2)"),
    ("no_such_field=1", "ROMEHParams has no field 'no_such_field'"),
])
def test_a_bad_hparam_fails_before_the_base_evaluation(tiny_model_dir, capsys, monkeypatch, override, problem):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the evaluation started before the hyper-parameters were checked")

    monkeypatch.setattr(protocol, "evaluate", must_not_run)
    argv = ["evaluate", "--model", str(tiny_model_dir("gpt2")), "--cases", str(FIXTURE), "--method", "base", "rome",
            "--rome", override]
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith("ace evaluate: error:") and problem in line


def test_a_missing_case_file_fails_before_the_model_loads(capsys, monkeypatch):
    monkeypatch.setattr("ace_interp.model.load_model", lambda *a, **k: pytest.fail("the model was loaded first"))
    assert cli.main(["evaluate", "--cases", "no-such-cases.json"]) == 2
    assert "no-such-cases.json" in one_error_line(capsys)


def test_debug_shows_the_traceback(tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.main(["--debug", "info", "./no/such/model"])
