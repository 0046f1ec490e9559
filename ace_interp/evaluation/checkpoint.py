"""Resumable evaluation: each finished work item is saved as it finishes, so a long table survives a stop and
splits over processes.

    >>> store = Checkpoint("results/main-table/smollm2-135m/checkpoint", {"seed": 0, "rows": {...}}, part="shard-0-of-2")
    >>> store.done(("per-case", "rome", 12))          # the rows of a finished item, or None
    >>> store.add(("per-case", "rome", 12), rows, seconds=21.4)

An *item* is one unit of work of a protocol: (row, case) in the per-case protocol, (row, batch) in the batched one.
Each process appends to a file of its own (JSON lines, `<part>.<pid>.<start>.jsonl`): a header line with the
fingerprint of the run's settings (model, case file digest, seed, askings, every row's hyper-parameters, ...) and
the commit, then one line per finished item with its key, rows and seconds. A store reads every file of its folder:
files with its fingerprint give finished items (a shard's work is seen by the run that assembles the table); a file
with another fingerprint raises, naming it, so results of other settings are never mixed in. Lines are flushed and
fsync'ed one by one; a line cut short by a crash is ignored (its item is simply run again).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ace_interp.provenance import git_state, jsonable

log = logging.getLogger(__name__)


def key_text(key: Sequence) -> str:
    """How a key is written in the files (and in `saved_items`' records)."""
    return json.dumps([str(k) for k in key])


@dataclass(frozen=True)
class Shard:
    """The `index`-th of `count` processes splitting a run's items (item i goes to shard i mod count)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """'0/2' → Shard(0, 2)."""
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"a shard is I/N with whole numbers, e.g. 0/2; got {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard {text!r}: need 0 <= I < N")
        return cls(index, count)

    def keeps(self, i: int) -> bool:
        return i % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class Checkpoint:
    """Finished items of one run (module docstring), read from and appended to `folder`."""

    def __init__(self, folder: str | os.PathLike, fingerprint: dict, part: str = "run"):
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(jsonable(fingerprint), sort_keys=True))
        self.part = part
        self._done: dict[str, dict] = {}
        self.segments: list[dict] = []  # per file read: name, commit, items, seconds
        self._file = None
        self._git = git_state()  # the code this process runs: read now, not when its first item finishes
        self._load()

    def _load(self) -> None:
        for path, header, records in _read_files(self.folder):
            if header.get("fingerprint") != self.fingerprint:
                raise ValueError(f"checkpoint {path} was written with other settings (model, cases, seed, rows or "
                                 f"hyper-parameters); remove {self.folder} or choose another --out")
            for record in records:
                self._done.setdefault(record["key"], record)
            self.segments.append({"file": path.name, "commit": header.get("commit"), "dirty": header.get("dirty"),
                                  "started": header.get("started"), "items": len(records),
                                  "seconds": round(sum(r["seconds"] for r in records), 2)})

    def __len__(self) -> int:
        return len(self._done)

    def done(self, key: Sequence[Hashable]) -> list[dict] | None:
        """The rows saved for `key`, or None when no process has finished it."""
        record = self._done.get(key_text(key))
        return None if record is None else record["rows"]

    @property
    def seconds(self) -> float:
        """Compute time of every finished item, summed over the processes that ran them."""
        return sum(r["seconds"] for r in self._done.values())

    def seconds_of(self, key: Sequence[Hashable]) -> float:
        """Compute time of the finished item `key` (0 when none has finished it)."""
        record = self._done.get(key_text(key))
        return 0.0 if record is None else record["seconds"]

    def add(self, key: Sequence[Hashable], rows: list[dict], seconds: float) -> None:
        """Save a finished item (appended and fsync'ed before this returns)."""
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            path = self.folder / f"{self.part}.{os.getpid()}.{started}.jsonl"
            self._file = open(path, "a")
            header = {"fingerprint": self.fingerprint, **self._git, "started": started}
            self._write(header)
        record = {"key": key_text(key), "rows": rows, "seconds": round(seconds, 3)}
        self._write(record)
        self._done[record["key"]] = record

    def _write(self, obj: dict) -> None:
        # numpy scalars in a row (numpy.float64, numpy.bool_) are saved as the Python values they hold
        self._file.write(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_files(folder: Path):
    """(path, header, finished records) of each non-empty file in `folder`, in name order. A line cut short by a
    crash is skipped: its item is simply run again."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl")):
        lines = path.read_text().splitlines()
        if not lines:
            continue
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            raise ValueError(f"checkpoint {path} has no readable header; remove it") from None
        records = []
        for line in lines[1:]:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("checkpoint %s: a line cut short (a stopped run) is ignored", path)
        yield path, header, records


def saved_items(folder: str | os.PathLike) -> tuple[dict | None, list[dict]]:
    """The fingerprint and finished items ({key, rows, seconds}) of every file in `folder`, each key once: a look at
    a run still in progress (`ace main-table --interim`). Files of different fingerprints raise, as in `Checkpoint`."""
    fingerprint, items = None, {}
    for path, header, records in _read_files(Path(folder)):
        if fingerprint is None:
            fingerprint = header.get("fingerprint")
        elif header.get("fingerprint") != fingerprint:
            raise ValueError(f"checkpoint {path} was written with other settings than the other files of {folder}")
        for record in records:
            items.setdefault(record["key"], record)
    return fingerprint, list(items.values())


def refuse_unresumed(folder: str | os.PathLike, resume: bool, shard: Shard | None = None) -> None:
    """Raise if `folder` (searched recursively) holds saved items of an earlier run and this run neither resumes
    them nor is one shard of a split run (shards start beside each other's files)."""
    if not resume and shard is None and any(Path(folder).rglob("*.jsonl")):
        raise ValueError(f"{folder} holds the finished items of an earlier run; pass --resume to continue it, "
                         "or remove that folder to start again")


def run_items(items: Sequence[tuple[Sequence[Hashable], object]], work, checkpoint: Checkpoint | None = None,
              shard: Shard | None = None, bar=None) -> list[dict]:
    """The rows of every item: saved ones from `checkpoint`, the rest computed by `work(payload)` (and saved).
    With a `shard`, only the items it keeps are computed, and only theirs are returned."""
    rows: list[dict] = []
    for i, (key, payload) in enumerate(items):
        if shard is not None and not shard.keeps(i):
            continue
        saved = checkpoint.done(key) if checkpoint is not None else None
        if saved is None:
            start = time.perf_counter()
            saved = work(payload)
            if checkpoint is not None:
                checkpoint.add(key, saved, time.perf_counter() - start)
        rows += saved
        if bar is not None:
            bar.update()
    return rows
