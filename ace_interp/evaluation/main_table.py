"""The main table: Base, FT, ROME, MEMIT, PMET, ACE (+ ACE's ablations and variants) on every filtered case.

    $ ace main-table --models toy-gptj --no-readme --out results/toy-gptj-table

`ace main-table` (this module's `run_main_table`) evaluates every row on *all* of each model's cases (a
per-number-of-edits sample only when `per_edits` is set) in both protocols:

* per case (evaluation.protocol, the ACE paper's): each case edited alone and restored, its questions asked
  direct, with chain of thought and (real models) with chain of thought from other relations' demonstrations
  — all of the *same* edited model; cases filtered to those the unedited model answers;
* batched (evaluation.batched, MQuAKE / MQuAKE-Remastered's): the edits of `batch_size` cases at once, with
  contamination masking, edited and unedited cases reported apart.

Every accuracy cell shows the 95% Wilson interval and n (evaluation.stats.accuracy_cell); every comparison is
paired on the same (case, seed, prompting) rows with its interval and exact McNemar p-value (paired_test).
It writes `<out>/<model>/{per_case,summary}.csv` (+ `batched_per_case.csv`) and `run.json` beside them, a
combined `<out>/main_table.md` + `main_table_per_case.csv` + `run.json` over every model table in `<out>` (models
run by separate commands, with settings of their own, share it), and, unless told not to, rewrites the README's
results section between its markers.

ACE's layer ablations (skip the top-1 query layer, the top-1..3 query layers, the top-1 value layer, the
top-1..2 value layers) and its options (`ace +implicit`: the implicit-subject write, off in ACE's defaults) are
rows of the per-case table, asked direct only.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.data.mquake import MQuAKECase, load_mquake
from ace_interp.editing import default_hparams, implicit_subject_layers
from ace_interp.editing.hparams import DEFAULT_PRESET, HParams
from ace_interp.evaluation.batched import evaluate_batched
from ace_interp.evaluation.checkpoint import Checkpoint, Shard, key_text, refuse_unresumed, saved_items
from ace_interp.evaluation.general_ability import heldout_texts
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.evaluation.protocol import UNEDITED_KEY, EvalResult, MethodRow, askings_for, evaluate
from ace_interp.evaluation.stats import accuracy_cell, paired_test, proportion_cell
from ace_interp.model import load_model
from ace_interp.provenance import file_digest, git_state, jsonable, repo_relative, write_run_json

log = logging.getLogger(__name__)

METHODS: tuple[str | None, ...] = (None, "ft", "rome", "memit", "pmet", "ace")
# The batched protocol's rows: the batch editors. ROME writes one fact (a rank-one update); our tuned ROME's
# exact shared solve over a batch of ~165 requests made toy-gptj's logits non-finite (2026-12-07), and ROME's
# release applies several requests one after another, 165 edits per write (`--batched-methods` adds it back).
BATCHED_METHODS: tuple[str, ...] = ("ft", "memit", "pmet", "ace")
README_BEGIN, README_END = "<!-- main-table:begin -->", "<!-- main-table:end -->"
PROMPTING_NAMES = {"direct": "direct", "cot": "CoT", "cot-ood": "CoT-OOD"}


def sample_by_edits(cases: Sequence[MQuAKECase], per_edits: int, seed: int = 0) -> list[MQuAKECase]:
    """Up to `per_edits` cases for each number of edits (1..4), seeded."""
    rng = random.Random(seed)
    out = []
    for k in sorted({c.n_edits for c in cases}):
        group = [c for c in cases if c.n_edits == k]
        rng.shuffle(group)
        out += group[:per_edits]
    return out


def ace_ablation_hparams(bridge, skip: str, preset: str | None = None):
    """ACE (default groups) with layers removed: 'q1' top-1 query layer, 'q1-3' the top three,
    'v1' the top-1 value layer, 'v1-2' the top two. 'Top' = the group's layer that ranks best by
    attribution; for the fixed paper groups we take the query layer nearest the value group and the
    last value layer (where z is computed) as the top ones. Raises ValueError where no value layer
    would be left (the toys' value group is one layer)."""
    hp = default_hparams("ace", bridge, preset)
    q, v = list(hp.query_layers), list(hp.value_layers)
    drop_q = {"q1": 1, "q1-3": 3}.get(skip, 0)
    drop_v = {"v1": 1, "v1-2": 2}.get(skip, 0)
    q = q[: len(q) - drop_q] if drop_q else q
    v = v[: len(v) - drop_v] if drop_v else v
    if not v:
        raise ValueError(f"skipping {skip} leaves no value layer")
    return replace(hp, query_layers=tuple(q), value_layers=tuple(v))


ACE_VARIANTS = ("implicit",)


def ace_variant_hparams(bridge, variant: str, preset: str | None = None):
    """ACE's defaults with one of its options switched on: 'implicit' is the implicit-subject write at
    `implicit_subject_layers(bridge)` (docs/ace.md, "The implicit subject")."""
    if variant == "implicit":
        return default_hparams("ace", bridge, preset, implicit_layers=implicit_subject_layers(bridge))
    raise ValueError(f"unknown ACE variant {variant!r}; expected one of {ACE_VARIANTS}")


def ace_extra_rows(bridge, config: "TableConfig") -> list[tuple[str, object]]:
    """(row label, ACE hyper-parameters) for the table's ACE ablations ('ace -q1') and variants ('ace +implicit');
    an ablation that leaves no layer to write is logged and left out."""
    rows = []
    for skip in config.ablations:
        try:
            rows.append((f"ace -{skip}", ace_ablation_hparams(bridge, skip, config.preset)))
        except ValueError as err:
            log.warning("ACE ablation -%s not run: %s", skip, err)
    return rows + [(f"ace +{v}", ace_variant_hparams(bridge, v, config.preset)) for v in config.ace_variants]


@dataclass
class TableConfig:
    models: tuple[str, ...] = ("smollm2-135m", "toy-gptj", "toy-qwen3")
    methods: tuple[str | None, ...] = METHODS
    per_edits: int | None = None  # None: every case of the model's file; else a seeded sample per number of edits
    n_specificity: int = 5
    ablations: tuple[str, ...] = ("q1", "q1-3", "v1", "v1-2")
    ace_variants: tuple[str, ...] = ACE_VARIANTS  # ACE with an option on, a row each (direct prompting)
    cot: bool = True  # ask the chain-of-thought settings ("cot"; real models also "cot-ood") besides "direct"
    cot_methods: tuple[str | None, ...] = METHODS  # the rows asked with chain of thought (None: the unedited model)
    seeds: tuple[int, ...] = (0,)
    out: Path = Path("results")
    protocols: tuple[str, ...] = ("per-case", "batched")
    batch_size: int | None = 100  # the batched protocol's k (None: all cases in one batch)
    batched_methods: tuple[str | None, ...] = BATCHED_METHODS
    # which cases may not share a batch (batched.make_batches): on the small worlds of our case files, packing
    # contaminating cases apart makes each batch one write that all its cases are asked under (docs/evaluation.md)
    batch_packing: str = "contamination"
    perplexity: bool = True  # the general-ability column (ppl_ratio)
    # (method, bridge) -> the method's hyper-parameters, or None for `default_hparams`; for the table's
    # methods and their chain-of-thought rows (ACE's layer ablations and variants start from the defaults)
    hparams: Callable[[str, TransformerBridge], HParams | None] | None = None
    preset: str = DEFAULT_PRESET  # every row's preset (editing.hparams; `hparams` above may override a method's)
    # resumable runs (evaluation.checkpoint): each finished item is saved under <out>/<model>/checkpoint/; `resume`
    # continues from what is saved there, `shard` runs only its share (the table is assembled by a run without one)
    resume: bool = False
    shard: Shard | None = None
    # output folders of earlier tables (as `out`) whose model tables lend rows of the same settings (`kept_rows`)
    rows_from: tuple[Path, ...] = ()


def table_rows(bridge: TransformerBridge, config: TableConfig) -> list[MethodRow]:
    """The per-case table's rows: the methods (chain of thought where `cot_methods` says), then ACE's ablations and
    variants (direct only), each with its hyper-parameters resolved (run.json records them)."""
    direct_only = ("direct",)
    rows = []
    for m in config.methods:
        hp = None
        if m is not None:
            hp = (config.hparams(m, bridge) if config.hparams else None) or default_hparams(m, bridge, config.preset)
        rows.append(MethodRow(m or "base", m, hp, None if m in config.cot_methods else direct_only))
    rows += [MethodRow(label, "ace", hp, direct_only) for label, hp in ace_extra_rows(bridge, config)]
    return rows


def evaluate_model(model_name: str, cases_path: Path, config: TableConfig) -> pd.DataFrame | None:
    """Every row in each protocol on the model's cases, once per seed (the seed draws the specificity facts,
    the batches and, with `per_edits`, the cases); per-case rows with `protocol` and `seed` columns.

    Each finished (row, case) or (row, batch) is saved under `<out>/<model>/checkpoint/` as it finishes; with
    `config.resume` the run continues from there, with `config.shard` it runs only its share and returns None
    (its items wait in the checkpoint for the run that assembles the table, which then removes it)."""
    start, git = time.perf_counter(), git_state()
    folder = config.out / Path(model_name).name
    saved = folder / "checkpoint"
    refuse_unresumed(saved, config.resume, config.shard)
    bridge = load_model(model_name)
    # ACE's query write trains on multi-hop prompts the cases do not ask (evaluation.hops)
    hops = hop_prompts_for(bridge, cases_path)
    all_cases = load_mquake(cases_path)
    promptings = ("direct", "cot", "cot-ood") if config.cot else ("direct",)
    askings = askings_for(bridge, promptings)
    texts = heldout_texts(bridge) if config.perplexity else None
    rows = table_rows(bridge, config)
    settings = dict(hparams={r.label: r.hparams for r in rows}, preset=config.preset, seeds=config.seeds,
                    protocols=list(config.protocols), batch_size=config.batch_size, batching=config.batch_packing,
                    promptings=[a.label for a in askings], per_edits=config.per_edits,
                    n_specificity=config.n_specificity, perplexity_texts=len(texts or []))
    finished = finished_table(folder, settings, cases_path) if config.resume and config.shard is None else None
    if finished is not None:
        log.info("%s: the table in %s is complete with these settings; read, not run again", model_name, folder)
        return finished
    # rows an assembled table of these settings already holds with the same hyper-parameters (this folder's with
    # --resume, then each --rows-from table's): kept, not run again
    sources = ([folder] if config.resume else []) + [Path(d) / folder.name for d in config.rows_from]
    kept = kept_rows(sources, settings, cases_path, rows, [a.label for a in askings])
    for source in kept.sources:
        log.info("%s: rows kept from %s: %s", model_name, source["folder"],
                 "; ".join(f"{k['protocol']} seed {k['seed']}: {', '.join(k['rows'])}" for k in source["kept"]))
    frames, stores = [], []
    for seed in config.seeds:
        cases = sample_by_edits(all_cases, config.per_edits, seed) if config.per_edits else list(all_cases)
        log.info("%s, seed %d: %d cases (%s edits)", model_name, seed, len(cases), sorted({c.n_edits for c in cases}))
        part = f"shard-{config.shard.index}-of-{config.shard.count}" if config.shard else "run"

        def store(protocol: str, protocol_rows: list[MethodRow]) -> Checkpoint:
            fingerprint = {"model": model_name, "case_file_sha256": file_digest(cases_path), "seed": seed,
                      "protocol": protocol, "per_edits": config.per_edits, "n_specificity": config.n_specificity,
                      "askings": [a.label for a in askings], "perplexity_texts": len(texts or []),
                      "rows": {r.label: [r.method, r.hparams, r.promptings] for r in protocol_rows}}
            stores.append(Checkpoint(saved / f"{protocol.replace(' ', '-')}-seed-{seed}", fingerprint, part))
            return stores[-1]

        if "per-case" in config.protocols:
            frames += kept.frames(seed, "per-case")
            todo = kept.to_run(seed, "per-case", rows)
            if todo:
                frames.append(evaluate(bridge, cases, todo, askings=askings, n_specificity=config.n_specificity,
                                       hop_prompts=hops, seed=seed, perplexity_texts=texts,
                                       checkpoint=store("per-case", todo), shard=config.shard)
                              .per_case.assign(seed=seed, protocol="per-case"))
        protocol = batched_protocol(config.batch_size)
        if "batched" in config.protocols:
            frames += kept.frames(seed, protocol)
            todo = kept.to_run(seed, protocol, batched_rows(rows, config))
            if todo:
                frames.append(evaluate_batched(bridge, cases, todo, askings[:1], batch_size=config.batch_size,
                                               n_specificity=config.n_specificity, hop_prompts=hops, seed=seed,
                                               perplexity_texts=texts, checkpoint=store(protocol, todo),
                                               shard=config.shard, packing=config.batch_packing)
                              .per_case.assign(seed=seed, protocol=protocol))
    for s in stores:
        s.close()
    if config.shard is not None:
        log.info("%s: shard %s done; its items are in %s (a run without --shard assembles the table)",
                 model_name, config.shard, saved)
        return None
    per_case = add_edited_hops(pd.concat(frames, ignore_index=True).assign(model=model_name), all_cases)
    EvalResult(per_case).to_csv(folder)
    # the items' compute time summed over every process that ran them (shards, stopped runs), and who ran them;
    # the unedited model's answers (asked once per run, saved beside the items) are reported apart
    unedited_s = sum(s.seconds_of(UNEDITED_KEY) for s in stores)
    segments = [{"checkpoint": s.folder.name, **seg} for s in stores for seg in s.segments]
    write_run_json(folder, case_file=cases_path, wall_s=time.perf_counter() - start, git=git, model=model_name,
                   n_cases=len(all_cases), item_seconds=round(sum(s.seconds for s in stores) - unedited_s, 1),
                   unedited_answers_seconds=round(unedited_s, 1),
                   resumed_from=segments, **settings, **({"rows_kept_from": kept.sources} if kept.sources else {}))
    # the table now holds these protocols' items (per_case.csv, run.json): their checkpoints have served
    for s in stores:
        shutil.rmtree(s.folder, ignore_errors=True)
    if saved.is_dir() and not any(saved.iterdir()):
        saved.rmdir()
    return per_case


def finished_table(folder: Path, settings: dict, cases_path: Path) -> pd.DataFrame | None:
    """The per-case rows of a model table already complete in `folder` (its run.json records the same `settings`
    and case file), or None. A resumed run of several models reads such a table instead of running it again (one
    of other rows or protocols lends what it holds: `kept_rows`)."""
    recorded = recorded_table(folder, settings, cases_path)
    if recorded is None and (folder / "run.json").exists():
        log.info("%s holds a table of other settings: not read whole (rows it shares with these are kept)", folder)
    return None if recorded is None else recorded[1]


def recorded_table(folder: Path, settings: dict, cases_path: Path, ignoring: Sequence[str] = ()
                   ) -> tuple[dict, pd.DataFrame] | None:
    """`folder`'s run.json record and per_case.csv rows if it holds an assembled table made on the same case file
    with the same `settings` (but for the keys in `ignoring`), else None."""
    run, rows = folder / "run.json", folder / "per_case.csv"
    if not (run.exists() and rows.exists()):
        return None
    record = json.loads(run.read_text())
    same = all(record.get(k) == v for k, v in jsonable(settings).items() if k not in ignoring)
    if not same or record.get("case_file_sha256") != file_digest(cases_path):
        return None
    return record, pd.read_csv(rows)


def batched_protocol(batch_size: int | None) -> str:
    """The batched protocol's name in the tables' `protocol` column ("batched k=100", "batched k=all")."""
    return f"batched k={batch_size or 'all'}"


def is_batched(protocol: str) -> bool:
    """Whether a `protocol` column value names the batched protocol (`batched_protocol`), of any batch size."""
    return protocol.startswith("batched k=")


def batched_rows(rows: Sequence[MethodRow], config: TableConfig) -> list[MethodRow]:
    """The batched protocol's rows: the batch editors among the table's methods (not ACE's ablations or variants)."""
    return [r for r in rows if r.method in config.batched_methods and r.label == r.method]


@dataclass
class KeptRows:
    """Rows of assembled tables a run keeps instead of running them again (`kept_rows`)."""

    per_case: pd.DataFrame  # the kept rows, with `seed` and `protocol` columns
    labels: dict[tuple[int, str], set[str]]  # (seed, protocol) -> the row labels kept
    sources: list[dict]  # per source table: its folder, what was kept, and how the table was made

    def frames(self, seed: int, protocol: str) -> list[pd.DataFrame]:
        part = self.per_case[(self.per_case.seed == seed) & (self.per_case.protocol == protocol)]
        return [part] if len(part) else []

    def to_run(self, seed: int, protocol: str, rows: Sequence[MethodRow]) -> list[MethodRow]:
        return [r for r in rows if r.label not in self.labels.get((seed, protocol), set())]


# settings a table's rows may differ in and still be kept: which protocols ran, and the other rows' hyper-parameters;
# the batched protocol's own settings matter to its rows only
_ROW_SETTINGS = ("protocols", "hparams")
_BATCHED_SETTINGS = ("batch_size", "batching")


def kept_rows(sources: Sequence[Path], settings: dict, cases_path: Path, rows: Sequence[MethodRow],
              promptings: Sequence[str]) -> KeptRows:
    """The rows of `rows` that a finished table in `sources` (model folders, first one first) already holds: same
    case file and settings but for `_ROW_SETTINGS` (and `_BATCHED_SETTINGS`, for per-case rows), the row's label
    with the same hyper-parameters, asked (for each seed and protocol it holds) with every prompting the row asks
    here (`promptings` are the run's; batched rows ask the first). So a table gains rows (ACE's ablations after
    the core rows) or a protocol without running its other rows again; a row of other hyper-parameters runs again."""
    wanted = jsonable(settings)
    parts, labels, records = [], {}, []
    for folder in sources:
        recorded = recorded_table(folder, settings, cases_path, ignoring=_ROW_SETTINGS + _BATCHED_SETTINGS)
        if recorded is None:
            if (folder / "run.json").exists():
                log.info("%s holds a table of other settings: none of its rows is kept", folder)
            continue
        record, held = recorded
        kept_here, taken_rows = [], []
        for (seed, protocol), part in held.groupby(["seed", "protocol"]):
            seed, taken = int(seed), []
            if is_batched(protocol) and any(record.get(k) != wanted.get(k) for k in _BATCHED_SETTINGS):
                continue
            asks = {r.label: set(promptings[:1] if is_batched(protocol) else
                                 [p for p in promptings if r.promptings is None or p in r.promptings]) for r in rows}
            for label, row_part in part.groupby("method"):
                if (label not in asks or label in labels.get((seed, protocol), set())
                        or (record.get("hparams") or {}).get(label, "absent") != wanted["hparams"].get(label)
                        or not asks[label] <= set(row_part.prompting)):
                    continue
                taken_rows += list(row_part.index[row_part.prompting.isin(asks[label])])
                labels.setdefault((seed, protocol), set()).add(label)
                taken.append(label)
            if taken:
                kept_here.append({"seed": seed, "protocol": protocol, "rows": taken})
        parts.append(held.loc[sorted(taken_rows)])  # in the table's own order
        if kept_here:
            records.append({"folder": str(folder), "kept": kept_here,
                            **{k: record.get(k) for k in ("command", "commit", "dirty", "date", "wall_s", "item_seconds")}})
    per_case = (pd.concat(parts, ignore_index=True).drop(columns=["model", "edited_hops"], errors="ignore") if parts
                else pd.DataFrame(columns=["seed", "protocol"]))
    return KeptRows(per_case, labels, records)


# ----------------------------------------------------------------------------- tables


def _pooled_cell(df: pd.DataFrame, metric: str, count: str) -> str:
    """A per-case fraction pooled over its items (edits, hops, facts) with the Wilson interval of the pooled count."""
    if metric not in df or count not in df or df[metric].isna().all():
        return "–"
    d = df[df[count] > 0]
    hits = int(round(float((d[metric] * d[count]).sum())))
    return proportion_cell(hits, int(d[count].sum()))


def _prompting_rows(per_case: pd.DataFrame) -> pd.DataFrame:
    if "prompting" not in per_case:
        per_case = per_case.assign(prompting="direct")
    if "protocol" not in per_case:
        per_case = per_case.assign(protocol="per-case")
    return per_case


def markdown_table(per_case: pd.DataFrame) -> str:
    """Per-case protocol: one row per (model, method, prompting): multi-hop accuracy overall and by number of
    edits (each with its interval and n), then efficacy (greedy top-1), efficacy_prob (p(new) > p(true)),
    paraphrase and specificity pooled over their items, the perplexity ratio and seconds per edit."""
    per_case = _prompting_rows(per_case)
    df_all = per_case[per_case.protocol == "per-case"]
    rows = []
    for (model, method, prompting), df in df_all.groupby(["model", "method", "prompting"], sort=False):
        row = {"model": model, "method": method, "prompting": PROMPTING_NAMES.get(prompting, prompting),
               "MH all": accuracy_cell(df.multi_hop)}
        for k in sorted(df.n_edits.unique()):
            row[f"MH {k}-edit"] = accuracy_cell(df[df.n_edits == k].multi_hop)
        row["efficacy"] = _pooled_cell(df, "efficacy", "n_efficacy")
        row["efficacy_prob"] = _pooled_cell(df, "efficacy_prob", "n_efficacy")
        row["paraphrase"] = _pooled_cell(df, "paraphrase", "n_paraphrase")
        row["specificity"] = _pooled_cell(df, "specificity", "n_specificity")
        if "ppl_ratio" in df and df.ppl_ratio.notna().any():
            row["ppl ratio (max)"] = f"{df.ppl_ratio.mean():.3f} ({df.ppl_ratio.max():.3f})"
        if "edit_seconds" in df and df.edit_seconds.notna().any():
            row["s/edit"] = f"{df.edit_seconds.mean():.1f}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("–").to_markdown(index=False) if rows else ""


def paired_comparison(per_case: pd.DataFrame, method: str, baseline: str) -> dict:
    """Multi-hop answers of `method` against `baseline` on the rows both have (per case, and per seed, prompting
    and protocol where the rows have them): the counts only one answers, the difference with its 95% interval
    and the exact McNemar p-value (evaluation.stats.paired_test)."""
    index = [c for c in ("case_id", "seed", "prompting", "protocol") if c in per_case]
    wide = per_case[per_case.method.isin([method, baseline])].pivot_table(
        index=index, columns="method", values="multi_hop").dropna()
    if method not in wide or baseline not in wide:
        wide = pd.DataFrame({method: [], baseline: []})
    test = paired_test(list(wide[method]), list(wide[baseline]))
    return {"cases": test.n, "only " + method: test.only_a, "only " + baseline: test.only_b,
            "difference": test.difference, "interval": (test.difference_low, test.difference_high),
            "sign-test p": test.p_value, "test": test}


def comparison_pairs(methods: Sequence[str], baseline: str = "pmet") -> list[tuple[str, str]]:
    """The comparisons a table reports: each edited core method against `baseline`, and ACE's ablations and
    variants ('ace -q1', 'ace +implicit') against ACE."""
    pairs = [(m, baseline) for m in methods if m not in ("base", baseline) and " " not in m and baseline in methods]
    pairs += [(m, "ace") for m in methods if m.startswith("ace ") and "ace" in methods]
    return pairs


def comparison_table(per_case: pd.DataFrame, baseline: str = "pmet") -> str:
    """Every comparison of `comparison_pairs`, per model, protocol and prompting, paired on the same rows."""
    per_case = _prompting_rows(per_case)
    rows = []
    for (model, protocol, prompting), df in per_case.groupby(["model", "protocol", "prompting"], sort=False):
        if "edited" in df and df.edited.notna().any():
            df = df[df.edited.fillna(True).astype(bool)]
        for a, b in comparison_pairs(list(dict.fromkeys(df.method)), baseline):
            result = paired_comparison(df, a, b)
            test = result["test"]
            if test.n == 0:
                continue
            pair = df[df.method.isin([a, b])].pivot_table(index=[c for c in ("case_id", "seed") if c in df],
                                                         columns="method", values="multi_hop").dropna()
            rows.append({"model": model, "protocol": protocol, "prompting": PROMPTING_NAMES.get(prompting, prompting),
                         "A": a, "B": b, "A multi-hop": accuracy_cell(pair[a]), "B multi-hop": accuracy_cell(pair[b]),
                         "A − B [95% CI]": f"{100 * test.difference:+.1f} pts [{100 * test.difference_low:+.1f}, "
                                           f"{100 * test.difference_high:+.1f}]",
                         "only A / only B": f"{test.only_a} / {test.only_b}", "McNemar p": f"{test.p_value:.2g}"})
    return pd.DataFrame(rows).to_markdown(index=False) if rows else ""


def batched_table(per_case: pd.DataFrame) -> str:
    """Batched protocol: multi-hop accuracy on edited and on unedited cases (with intervals), masked edits."""
    per_case = _prompting_rows(per_case)
    df_all = per_case[per_case.protocol.map(is_batched)]
    rows = []
    for (model, protocol, method, prompting), df in df_all.groupby(["model", "protocol", "method", "prompting"], sort=False):
        edited, unedited = df[df.edited.astype(bool)], df[~df.edited.astype(bool)]
        rows.append({"model": model, "protocol": protocol, "method": method,
                     "prompting": PROMPTING_NAMES.get(prompting, prompting),
                     "MH edited cases": accuracy_cell(edited.multi_hop),
                     "MH unedited cases": accuracy_cell(unedited.multi_hop),
                     "efficacy": _pooled_cell(edited, "efficacy", "n_efficacy"),
                     "cases with masked edits": f"{int((df.n_masked > 0).sum())} of {len(df)}",
                     "ppl ratio": f"{df.ppl_ratio.mean():.3f}" if "ppl_ratio" in df and df.ppl_ratio.notna().any() else "–"})
    return pd.DataFrame(rows).to_markdown(index=False) if rows else ""


def add_edited_hops(per_case: pd.DataFrame, cases: Sequence[MQuAKECase]) -> pd.DataFrame:
    """Add `edited_hops` ("0", "1", "0+1", ...): the hops of each case's chain its rewrites edit (0 = the
    question's own subject, >= 1 = a bridge entity the question never names; `MQuAKECase.edited_hops`)."""
    hops = {str(c.case_id): "+".join("?" if h is None else str(h) for h in c.edited_hops) for c in cases}
    return per_case.assign(edited_hops=per_case.case_id.astype(str).map(hops))


def edited_hop_table(per_case: pd.DataFrame) -> str:
    """Multi-hop accuracy of the one-edit cases (per-case protocol), split by the edited hop: the question's own
    subject (hop 0) vs a later hop, whose subject is an implicit bridge entity (analysis.edit_reach says why)."""
    per_case = _prompting_rows(per_case)
    one = per_case[(per_case.n_edits == 1) & per_case.edited_hops.notna() & (per_case.protocol == "per-case")]
    if one.empty:
        return ""
    rows = []
    for (model, method, prompting), df in one.groupby(["model", "method", "prompting"], sort=False):
        first, later = df[df.edited_hops == "0"], df[df.edited_hops != "0"]
        rows.append({"model": model, "method": method, "prompting": PROMPTING_NAMES.get(prompting, prompting),
                     "MH, hop-0 edit": accuracy_cell(first.multi_hop),
                     "MH, later-hop edit": accuracy_cell(later.multi_hop)})
    return pd.DataFrame(rows).to_markdown(index=False)


def update_readme(readme: Path, table: str, command: str) -> None:
    text = readme.read_text()
    block = f"{README_BEGIN}\n_Regenerate with `{command}`._\n\n{table}\n{README_END}"
    if README_BEGIN in text and README_END in text:
        start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
        text = text[:start] + block + text[end:]
    else:
        text += f"\n## Main table (MQuAKE protocol)\n\n{block}\n"
    readme.write_text(text)


def interim_rows(folder: Path, cases: Sequence[MQuAKECase]) -> pd.DataFrame | None:
    """The per-case rows of every item a run in progress has saved under `folder/checkpoint` (no base rows: those
    come with the assembled table), with `protocol` and `seed` from each checkpoint's fingerprint."""
    frames = []
    for sub in sorted(p for p in (folder / "checkpoint").glob("*") if p.is_dir()):
        fingerprint, items = saved_items(sub)
        rows = [r for item in items if item["key"] != key_text(UNEDITED_KEY) for r in item["rows"]]
        if fingerprint is not None and rows:
            frames.append(pd.DataFrame(rows).assign(protocol=fingerprint["protocol"], seed=fingerprint["seed"]))
    if not frames:
        return None
    return add_edited_hops(pd.concat(frames, ignore_index=True).assign(model=folder.name), cases)


def interim_report(config: "TableConfig", cases: dict[str, Path]) -> str:
    """The table over what the models' runs in `config.out` have finished so far, headed INTERIM with the items
    per method: cells keep their n and intervals, comparisons are paired on the cases both methods have."""
    frames = [f for m in config.models
              if (f := interim_rows(config.out / Path(m).name, load_mquake(cases[m]))) is not None]
    if not frames:
        return f"no saved items under {config.out}/<model>/checkpoint for {', '.join(config.models)}"
    per_case = pd.concat(frames, ignore_index=True)
    counts = per_case.drop_duplicates(["model", "protocol", "method", "case_id"]).groupby(
        ["model", "protocol", "method"]).size()
    head = "INTERIM: the items finished so far, not the assembled table (no base rows). Items per row: " + "; ".join(
        f"{m} {p} {r} {n}" for (m, p, r), n in counts.items())
    return head + "\n\n" + table_report(per_case, config.seeds)


def table_report(per_case: pd.DataFrame, seeds: Sequence[int]) -> str:
    """The main table's markdown: the per-case table, the paired comparisons, the batched table, and the one-edit
    cases by edited hop. Cells: accuracy [95% Wilson interval] n=cases; comparisons: exact McNemar."""
    parts = [markdown_table(per_case)]
    comparisons = comparison_table(per_case)
    if comparisons:
        parts.append(f"Paired comparisons on the same cases (seeds {list(seeds)}; batched: edited cases):\n\n{comparisons}")
    batched = batched_table(per_case)
    if batched:
        parts.append(f"Batched protocol (MQuAKE-Remastered contamination masking), edited vs unedited cases:\n\n{batched}")
    by_hop = edited_hop_table(per_case)
    if by_hop:
        parts.append("One-edit cases by the hop their rewrite edits (0: the question's subject; later: a bridge "
                     f"entity):\n\n{by_hop}")
    return "\n\n".join(p for p in parts if p)


def run_main_table(config: TableConfig, cases: dict[str, Path], readme: Path | None, command: str) -> str:
    """Each model's table (`evaluate_model`), then the combined `main_table.md` / `main_table_per_case.csv` /
    `run.json` over these models and every model table earlier commands left in `config.out`."""
    start, git = time.perf_counter(), git_state()
    frames = [evaluate_model(m, cases[m], config) for m in config.models]
    if config.shard is not None:
        return (f"shard {config.shard} of {', '.join(config.models)} done; run the same command without --shard "
                "(with --resume) to assemble the tables")
    # the combined table covers every model table in `out`: those of earlier commands (each with its own settings,
    # in its run.json) join this command's, so models run by separate commands share one table
    here = [Path(m).name for m in config.models]
    earlier = [p.parent.name for p in sorted(config.out.glob("*/per_case.csv"))
               if p.parent.name not in here and (p.parent / "run.json").is_file()]
    frames += [pd.read_csv(config.out / name / "per_case.csv") for name in earlier]
    per_case = pd.concat(frames, ignore_index=True)
    table = table_report(per_case, config.seeds)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "main_table.md").write_text(table + "\n")
    per_case.to_csv(config.out / "main_table_per_case.csv", index=False)
    write_run_json(config.out, command=command, preset=config.preset, seeds=config.seeds,
                   wall_s=time.perf_counter() - start, git=git, models=here + earlier,
                   case_files={m: repo_relative(cases[m]) for m in config.models},
                   per_model_runs=[f"{name}/run.json" for name in here + earlier],
                   earlier_model_tables={name: json.loads((config.out / name / "run.json").read_text()).get("command")
                                         for name in earlier})
    if readme is not None:
        update_readme(readme, table, command)
    return table
