"""Editing speed and efficacy: ROME, MEMIT, PMET, ACE, per edit and per batch of k edits, split by stage.

    python -m benchmarks.bench_editing --model smollm2-135m --k 1 10
    python -m benchmarks.bench_editing --model toy-gptj --k 1 10 100

One run prints, per method and k:

* covariance, cold: the key-statistics pass over the method's layers with an empty statistics cache
  (a temporary cache folder; the model itself stays in the user cache), and once per model the corpus
  text (sampling it from the model for real models; toy models read their world corpus);
* the warm edit (statistics cached, context prefixes computed): total seconds and its stages
  (`AppliedEdit.info["timings"]`: covariance read from the cache, target-value optimisation, keys and
  current site outputs, solve = Cholesky + key→value solves + intermediate writes, write = the final
  transactional write);
* efficacy of the batch, as the MQuAKE protocol measures it (`evaluation.protocol.edit_efficacy`):
  `top1` = greedy continuation of the cloze prompt names target_new, `p>p` = p(target_new) > p(target_true);
* next to it, specificity (`spec`, over `n spec` facts): of up to 5 facts per edit of the edited relation with
  another subject that the unedited model answers (`sweep_toy_editing.specificity_facts`), the share still
  answered with the batch applied — a batch can reach every target and still overwrite what it should not.

Requests: the first k distinct-subject `requested_rewrite`s of the model's case file (SmolLM2: the filtered
real facts `assets/real_facts/smollm2_known.json`; toy models: `assets/world/mquake_cases.json`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence

import pandas as pd

from ace_interp.data.mquake import Rewrite, load_mquake
from ace_interp.editing import EditRequest, default_hparams, edit
from ace_interp.editing.covariance import default_corpus, second_moments
from ace_interp.evaluation.protocol import SpecificityPool, edit_efficacy, style_for
from ace_interp.model import load_model
from ace_interp.model.loading import ASSETS
from benchmarks.common import machine_description

log = logging.getLogger(__name__)

METHODS = ("rome", "memit", "pmet", "ace")
STAGES = ("targets", "keys", "solve", "write", "covariance", "contexts")


def case_file(model: str):
    return ASSETS / "world" / "mquake_cases.json" if model.startswith("toy-") else ASSETS / "real_facts" / "smollm2_known.json"


def rewrites_for(model: str, k: int) -> list[Rewrite]:
    """The first k requested rewrites of the model's case file with distinct subjects."""
    seen, out = set(), []
    for case in load_mquake(case_file(model)):
        for rw in case.requested_rewrite:
            if rw.subject not in seen:
                seen.add(rw.subject)
                out.append(rw)
    if len(out) < k:
        raise ValueError(f"{case_file(model)} has only {len(out)} distinct subjects; asked for {k}")
    return out[:k]


def known_specificity_facts(bridge, style, model: str, rws) -> list[dict]:
    """Facts of the edited relations about subjects outside the batch that the unedited model answers."""
    from benchmarks.sweep_toy_editing import specificity_facts, still_answered  # it imports this module

    pool = SpecificityPool.from_cases(load_mquake(case_file(model)))
    subjects = {rw.subject.lower() for rw in rws}
    facts = {f["cloze"]: f for rw in rws for f in specificity_facts(pool, rw) if f["subject"].lower() not in subjects}
    facts = list(facts.values())
    return [f for f, ok in zip(facts, still_answered(bridge, style, facts)) if ok]


def method_layers(hp) -> list[int]:
    if hasattr(hp, "layer"):
        return [hp.layer]
    if hasattr(hp, "value_layers"):
        return sorted(set(hp.query_layers) | set(hp.value_layers))
    return sorted(hp.layers)


@contextlib.contextmanager
def _cache_folder(path: str) -> Iterator[None]:
    old = os.environ.get("ACE_INTERP_CACHE")
    os.environ["ACE_INTERP_CACHE"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ACE_INTERP_CACHE", None)
        else:
            os.environ["ACE_INTERP_CACHE"] = old


def cold_covariance(bridge, methods: Sequence[str]) -> tuple[float, dict[str, float]]:
    """(seconds for the corpus text, {method: seconds of the statistics pass over its layers}), cold."""
    per_method = {}
    with tempfile.TemporaryDirectory(prefix="ace-bench-stats-") as tmp, _cache_folder(tmp):
        hps = {m: default_hparams(m, bridge) for m in methods}
        n_tokens = next(iter(hps.values())).covariance.n_tokens
        t = time.perf_counter()
        corpus = default_corpus(bridge, n_tokens=n_tokens, progress=False)
        corpus_seconds = time.perf_counter() - t
        for m, hp in hps.items():
            cov = hp.covariance
            t = time.perf_counter()
            second_moments(bridge, method_layers(hp), corpus=cov.corpus or corpus, n_tokens=cov.n_tokens,
                           seq_len=cov.seq_len, progress=False, use_cache=False)
            per_method[m] = time.perf_counter() - t
    return corpus_seconds, per_method


def run(model: str = "smollm2-135m", methods: Sequence[str] = METHODS, ks: Sequence[int] = (1,), cold: bool = True) -> pd.DataFrame:
    bridge = load_model(model)
    style = style_for(model)
    corpus_s, cold_s = cold_covariance(bridge, methods) if cold else (float("nan"), {})
    from benchmarks.sweep_toy_editing import still_answered

    rows = []
    spec_facts = {k: known_specificity_facts(bridge, style, model, rewrites_for(model, k)) for k in ks}
    for method in methods:
        warm_up = rewrites_for(model, 1)  # fills the user statistics cache and the context prefixes, untimed
        edit(bridge, [EditRequest.from_rewrite(rw.to_dict()) for rw in warm_up], method).undo()
        for k in ks:
            rws = rewrites_for(model, k)
            applied = edit(bridge, [EditRequest.from_rewrite(rw.to_dict()) for rw in rws], method)
            try:
                top1, prob = edit_efficacy(bridge, rws, style)
                spec = still_answered(bridge, style, spec_facts[k])
            finally:
                applied.undo()
            t = applied.info["timings"]
            row = {"method": method, "k": k, "seconds": applied.seconds, "s/edit": applied.seconds / k}
            row.update({s: t.get(s, 0.0) for s in STAGES})
            row["cov cold"] = cold_s.get(method, float("nan"))
            row["top1"] = sum(top1) / k
            row["p>p"] = sum(prob) / k
            row["spec"] = sum(spec) / max(1, len(spec))
            row["n spec"] = len(spec)
            rows.append(row)
            log.info("%s", row)
    frame = pd.DataFrame(rows)
    load = os.getloadavg()
    print(f"\n## Editing ({model}; {machine_description()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n")
    print(f"covariance corpus text, cold: {corpus_s:.2f} s (once per model)")
    print(frame.to_markdown(index=False, floatfmt=".2f"))
    return frame


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--k", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--no-cold", action="store_true", help="skip the cold covariance measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run(args.model, args.methods, args.k, cold=not args.no_cold)
