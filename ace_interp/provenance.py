"""Provenance of a results folder: `run.json`, saying how the folder was made.

    >>> from ace_interp.provenance import write_run_json
    >>> write_run_json("results/my-run", hparams={"pmet": {...}}, preset="tuned",
    ...                case_file="assets/world/mquake_cases.json", seeds=[0], wall_s=12.3)

Every research run writes one next to its CSVs (the brief: command, commit, hyper-parameters, preset, case
file, date). It imports nothing from the rest of the package, so any layer may call it.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_FILE = "run.json"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


RESULTS_PATHSPEC = ":(exclude)results"  # result files that runs write, move or remove are not the code's state


def git_state() -> dict:
    """The commit this code is at and whether tracked files outside results/ differ from it (None where git is
    unavailable): a run that assembles a table and removes its committed checkpoint is not run on changed code."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", RESULTS_PATHSPEC)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (the case file's identity: a renamed copy has the same digest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def jsonable(value):
    """`value` as JSON-ready data: dataclasses expanded, sets sorted (their order would differ between processes),
    paths as strings, anything else unknown as its repr."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def repo_relative(path: str | os.PathLike) -> str:
    """`path` relative to the repository when it lies inside (the same in every checkout or worktree that runs it),
    else as given."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def run_record(*, command: Sequence[str] | str | None = None, hparams: Mapping | None = None,
               preset: str | Mapping | None = None, case_file: str | os.PathLike | None = None,
               seeds: Sequence[int] | None = None, wall_s: float | None = None, git: Mapping | None = None,
               **extra) -> dict:
    """The provenance record: command line, git commit and dirty flag, hyper-parameters (dataclasses are
    expanded), preset, case file with its sha256, seeds, UTC date, machine, wall time, and any `extra` fields.
    `git` is `git_state()` as the run started (a run of hours can outlive the checkout it began on); None reads
    it now."""
    if command is None:
        command = [Path(sys.argv[0]).name, *sys.argv[1:]]
    record = {
        "command": command if isinstance(command, str) else " ".join(str(c) for c in command),
        **(dict(git) if git is not None else git_state()),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.machine(), "cpus": os.cpu_count()},
        "preset": jsonable(preset),
        "hparams": jsonable(hparams or {}),
        "seeds": list(seeds) if seeds is not None else None,
        "case_file": None, "case_file_sha256": None,
        "wall_s": None if wall_s is None else round(float(wall_s), 2),
    }
    if case_file is not None:
        record["case_file"] = repo_relative(case_file)
        if Path(case_file).is_file():
            record["case_file_sha256"] = file_digest(case_file)
    record.update({k: jsonable(v) for k, v in extra.items()})
    return record


def write_run_json(out_dir: str | os.PathLike, **fields) -> Path:
    """Write `out_dir/run.json` (see `run_record` for the fields) atomically; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RUN_FILE
    tmp = out / f".{RUN_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(run_record(**fields), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
