"""Which MQuAKE file a case set is, and MQuAKE-Remastered's layout: loading any of them into `MQuAKECase`s.

    >>> source = load_mquake_source("../shared/datasets/MQuAKE-hard.json")
    >>> source.variant, len(source.cases)                  # ('hard', 429)
    >>> load_mquake_source("remastered.json").edited_case_ids(100)   # Remastered's own k=100 edited set

The official files (princeton-nlp/MQuAKE `datasets/`: MQuAKE-CF-3k-v2.json — the one its README asks for —,
MQuAKE-CF-3k.json, MQuAKE-CF.json, MQuAKE-T.json; and the MQuAKE-hard subset of DeepEdit) share one schema,
which `data.mquake` loads and validates. They differ in content, not keys, so the variant is read off the
file name. MQuAKE-Remastered (`henryzhongsc/MQuAKE-Remastered` on the HF hub; splits CF3k, CF9k, CF6334, T)
stores the same cases *flattened* — `orig_triples`, `orig_triples_labeled`, `new_triples`,
`new_triples_labeled` at the top level, `target_new_str` / `target_true_str` in the rewrites — plus a
`split` ({"k": ["edited"] or ["unedited"]}) that fixes which cases its k-edit evaluation edits; it is
recognised by those keys and restored to the nested form (the `split` is kept in `MQuAKECase.extra`).
A Remastered row without `edit_triples` gets them from its edited chain: the hop whose subject and relation
are the rewrite's.

By name ("CF-3k-v2", "T", ...) the cases come through `datasets` from the hub; offline (no hub reachable, or
HF_HUB_OFFLINE set) that fails with one line naming the dataset and what to do instead.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ace_interp.data.mquake import MQuAKECase, MQuAKEFormatError, _unflatten, check_unique_ids, read_mquake_json

log = logging.getLogger(__name__)

VARIANTS = ("cf-3k-v2", "cf-3k", "cf", "t", "hard", "remastered", "mquake")
# file-name stems of the official files -> variant (checked in this order: "cf-3k-v2" before "cf-3k" before "cf")
_STEMS = (("3k-v2", "cf-3k-v2"), ("3k", "cf-3k"), ("hard", "hard"), ("mquake-t", "t"), ("mquake-cf", "cf"))
_REMASTERED_KEYS = ("split", "6334_split", "orig_triples", "new_triples")


def is_remastered_row(d: dict[str, Any]) -> bool:
    """A case in MQuAKE-Remastered's layout: its split labels or flattened triples at the top level."""
    return isinstance(d, dict) and any(k in d for k in _REMASTERED_KEYS)


def unflatten_remastered(d: dict[str, Any]) -> dict[str, Any]:
    """A Remastered row in the nested MQuAKE schema: `orig_*` keys and `target_*_str` restored (`mquake._unflatten`),
    top-level `new_triples*` / `edit_triples` moved into `orig`, missing `edit_triples` taken from the edited chain."""
    d = _unflatten(d)
    orig = dict(d.get("orig") or {})
    for key in ("new_triples", "new_triples_labeled", "edit_triples", "edit_triples_idx"):
        if key in d and key not in orig:
            orig[key] = d.pop(key)
    if "edit_triples" not in orig and "new_triples" in orig and "new_triples_labeled" in orig:
        edits = []
        for r in d.get("requested_rewrite") or []:
            hop = next((t for t, tl in zip(orig["new_triples"], orig["new_triples_labeled"])
                        if tl[0] == r.get("subject") and t[1] == r.get("relation_id")), None)
            if hop is None:
                raise MQuAKEFormatError(d.get("case_id"), "orig.edit_triples",
                                        f"missing, and no hop of the edited chain has the rewrite's subject "
                                        f"{r.get('subject')!r} and relation {r.get('relation_id')!r}")
            edits.append(list(hop))
        orig["edit_triples"] = edits
    d["orig"] = orig
    return d


def detect_variant(path_or_name: str | os.PathLike, raw: list[dict[str, Any]]) -> str:
    """"remastered" for Remastered's layout, else the official file the name says ("cf-3k-v2", "cf-3k", "cf", "t",
    "hard"), else "mquake" (any other file in the schema, e.g. ours)."""
    if raw and is_remastered_row(raw[0]):
        return "remastered"
    stem = Path(str(path_or_name)).stem.lower().replace("_", "-")
    if stem in ("t", "cf", "cf-3k", "cf-3k-v2", "hard"):
        return stem
    return next((variant for key, variant in _STEMS if key in stem), "mquake")


@dataclass
class MQuAKESource:
    """Cases with where they came from: the variant, the path or hub name."""

    variant: str
    cases: list[MQuAKECase]
    origin: str

    def edited_case_ids(self, k: int) -> list:
        """Remastered only: the ids its own k-edit evaluation edits (`split[str(k)]` holds "edited")."""
        if self.variant != "remastered":
            raise ValueError(f"{self.origin} is MQuAKE {self.variant!r}, which fixes no edited set; "
                             "only MQuAKE-Remastered does (its `split` field)")
        out = []
        for c in self.cases:
            labels = (c.extra.get("split") or {}).get(str(k))
            if labels is None:
                raise MQuAKEFormatError(c.case_id, f"split.{k}", f"no labels for {k} edits")
            if "edited" in labels:
                out.append(c.case_id)
        return out


def load_mquake_source(path_or_name: str | os.PathLike, validate: bool = True, limit: int | None = None) -> MQuAKESource:
    """Any MQuAKE case set — official file, MQuAKE-hard, Remastered (flattened or nested), ours — from a local
    JSON file, or by name through `datasets` (`data.mquake.HUB_SPLITS`); see the module docstring."""
    raw = read_mquake_json(path_or_name)
    if limit is not None:
        raw = raw[:limit]
    variant = detect_variant(path_or_name, raw)
    if variant == "remastered" or any(is_remastered_row(d) for d in raw[:1]):
        raw = [unflatten_remastered(d) for d in raw]
    cases = check_unique_ids([MQuAKECase.from_dict(d, validate=validate) for d in raw])
    log.info("loaded %d MQuAKE-%s cases from %s", len(cases), variant, path_or_name)
    return MQuAKESource(variant, cases, str(path_or_name))
