"""The research scripts in experiments/ import after the move out of benchmarks/, and save_run writes provenance."""
import importlib
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from ace_interp.data.mquake import load_mquake
from experiments import save_run

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.py")
                     if p.stem != "__init__")
TIMING_ONLY = {"batched_writes", "bench_attribution", "bench_editing", "bench_gpu", "bench_shapes", "common",
               "decode_batch", "eval_throughput", "profile_eval", "run_all", "toy_step_time"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_module_imports(name):
    module = importlib.import_module(f"experiments.{name}")
    assert module.__doc__, f"experiments.{name} needs a docstring with its command"


def test_benchmarks_hold_timing_benchmarks_only():
    benchmarks = {p.stem for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")} - {"__init__"}
    assert benchmarks <= TIMING_ONLY, f"research scripts in benchmarks/: {sorted(benchmarks - TIMING_ONLY)}"


def test_save_run_writes_tables_and_run_json(tmp_path):
    out = save_run(tmp_path / "run", {"per_case": pd.DataFrame({"case_id": [1, 2], "multi_hop": [1.0, 0.0]})},
                   time.time() - 2.0, seeds=[0], case_file="nowhere.json")
    assert pd.read_csv(out / "per_case.csv").case_id.tolist() == [1, 2]
    record = json.loads((out / "run.json").read_text())
    assert record["seeds"] == [0] and record["case_file"] == "nowhere.json" and record["wall_s"] >= 2.0
    assert record["command"]


def test_the_long_editing_sequence_has_a_subject_per_request():
    """experiments.sequential_editing: the case file's rewrites first, then one constructed rewrite per further
    person (true object from the world, a different new object of the same type); no subject twice."""
    from ace_interp.model.loading import ASSETS
    from benchmarks.bench_editing import rewrites_for
    from experiments.sequential_editing import sequence_rewrites

    world = ASSETS / "world"
    spec = json.loads((world / "world.json").read_text())
    kind = {e["name"]: e["type"] for e in spec["entities"]}
    facts = {(s, r): o for s, r, o in spec["facts"]}
    case = rewrites_for("toy-gptj", 419)
    rws = sequence_rewrites(world, case, 1000)
    assert len(rws) == 1000 and len({rw.subject for rw in rws}) == 1000
    assert [rw.subject for rw in rws[:419]] == [rw.subject for rw in case]
    for rw in rws[419:]:
        assert facts[(rw.subject, rw.relation_id)] == rw.target_true.text != rw.target_new.text
        assert kind[rw.target_new.text] == kind[rw.target_true.text] and kind[rw.subject] == "person"
    with pytest.raises(ValueError, match="subjects for distinct-subject rewrites"):
        sequence_rewrites(world, case, 1200)


def test_paired_table_pairs_the_same_facts_at_the_longest_common_check():
    from experiments.sequential_editing import paired_table

    rows = [("alphaedit", "sequential", 50, "f1", 1), ("alphaedit", "sequential", 50, "f2", 1),
            ("memit", "sequential", 50, "f1", 0), ("memit", "sequential", 50, "f2", 1),
            ("alphaedit", "sequential", 100, "f1", 1), ("memit", "batch", 10, "f1", 1)]
    outcomes = pd.DataFrame(rows, columns=["method", "mode", "edits", "item", "correct"]).assign(measure="specificity")
    sequence = pd.DataFrame({"method": ["alphaedit", "alphaedit", "memit"], "edits": [50, 100, 50]})
    table = paired_table(outcomes, sequence)
    (row,) = table.query("mode == 'sequential'").to_dict("records")
    assert (row["edits"], row["n"], row["only_a"], row["only_b"]) == (50, 2, 1, 0)
    assert row["difference"] == pytest.approx(0.5)


def test_combined_runs_pair_methods_that_ran_in_separate_processes(tmp_path, monkeypatch):
    """`--combine FOLDER:METHOD`: each run contributes only the named method's sequence; the pairs are per fact."""
    import experiments.sequential_editing as se

    monkeypatch.setattr(se, "write_png", lambda fig, path: None)
    cols = ["model", "method", "mode", "edits", "efficacy_cell", "specificity_cell", "untouched_cell", "perplexity",
            "seconds", "efficacy", "specificity", "untouched"]
    for run, method, kept in (("a", "alphaedit", 1), ("b", "memit", 0)):
        folder = tmp_path / run / "toy-x"
        folder.mkdir(parents=True)
        rows = [("toy-x", m, "sequential", 50, "", "", "", 1.0, 1.0, 0.5, 0.5, 0.5) for m in (method, "other")]
        pd.DataFrame(rows, columns=cols).to_csv(folder / "sequence.csv", index=False)
        pd.DataFrame([("toy-x", m, "sequential", 50, "specificity", f, kept) for m in (method, "other") for f in ("f1", "f2")],
                     columns=["model", "method", "mode", "edits", "measure", "item", "correct"]
                     ).to_csv(folder / "outcomes.csv.gz", index=False)
    se.combine_runs([f"{tmp_path / 'a'}:alphaedit", f"{tmp_path / 'b'}:memit"], tmp_path / "out")
    sequence = pd.read_csv(tmp_path / "out" / "toy-x" / "sequence.csv")
    assert sorted(sequence["method"]) == ["alphaedit", "memit"]
    (row,) = pd.read_csv(tmp_path / "out" / "toy-x" / "paired.csv").to_dict("records")
    assert (row["b"], row["n"], row["only_a"], row["only_b"]) == ("memit", 2, 2, 0)


def test_attribution_findings_paired_comparisons_count_discordant_facts():
    from experiments.attribution_findings import paired_comparisons

    # relation r: 3 facts; top leaves none right; random seed 0 leaves facts 0, 1 right, seed 1 fact 0 only
    rows = []
    for prompt in range(3):
        rows.append(dict(relation="r", condition="top", seed=None, prompt=prompt, log_prob=-10.0 - prompt, correct=False))
        rows.append(dict(relation="r", condition="random", seed=0, prompt=prompt, log_prob=-1.0, correct=prompt < 2))
        rows.append(dict(relation="r", condition="random", seed=1, prompt=prompt, log_prob=-12.0 if prompt == 2 else -1.0,
                         correct=prompt == 0))
    paired = paired_comparisons(pd.DataFrame(rows))
    seed0, seed1 = paired["r"]["per_seed"]
    assert (seed0["only_random"], seed0["only_top"], seed0["p_mcnemar"]) == (2, 0, 0.5)
    assert (seed1["only_random"], seed1["p_mcnemar"]) == (1, 1.0)
    assert seed0["difference"] == pytest.approx(2 / 3)
    assert seed0["difference95"][0] < 2 / 3 < seed0["difference95"][1]
    # per-fact log p: fact 2 ties under seed 1 (−12 both ways) and drops out of the sign test
    assert (seed1["log_p_top_lower"], seed1["log_p_top_higher"]) == (2, 0)
    mean = paired["r"]["mean_random_log_p"]
    assert (mean["log_p_top_lower"], mean["log_p_top_higher"], mean["n"]) == (3, 0, 3)
    assert mean["p_sign"] == pytest.approx(0.25)
    assert paired["all"] == paired["r"]


def test_attribution_findings_paired_from_counts_equals_the_per_fact_tests_when_top_leaves_none_right():
    from experiments.attribution_findings import paired_comparisons, paired_from_counts

    right = {("r", 0): [1, 1, 0], ("r", 1): [1, 0, 0], ("s", 0): [1, 1], ("s", 1): [0, 0]}
    rows, ablation = [], {}
    for relation, n in (("r", 3), ("s", 2)):
        ablation[relation] = {"top": [{"correct": 0, "n": n}], "random": []}
        for prompt in range(n):
            rows.append(dict(relation=relation, condition="top", seed=None, prompt=f"{relation}{prompt}", log_prob=-9.0,
                             correct=False))
        for seed in (0, 1):
            ablation[relation]["random"].append({"seed": float(seed), "correct": sum(right[relation, seed]), "n": n})
            for prompt, ok in enumerate(right[relation, seed]):
                rows.append(dict(relation=relation, condition="random", seed=seed, prompt=f"{relation}{prompt}",
                                 log_prob=-1.0, correct=bool(ok)))
    per_fact = paired_comparisons(pd.DataFrame(rows))
    counted = paired_from_counts({"ablation": ablation})
    for relation in ("all", "r", "s"):
        for a, b in zip(counted[relation]["per_seed"], per_fact[relation]["per_seed"], strict=True):
            assert {k: a[k] for k in a} == {k: b[k] for k in a}
    ablation["r"]["top"][0]["correct"] = 1  # then the discordant pairs no longer follow from the counts
    assert paired_from_counts({"ablation": ablation}) is None


def test_preset_table_pairs_each_method_on_the_cases_both_presets_ran():
    """A time-boxed run can stop between the presets of a round: the paired rows use the cases both ran."""
    from experiments.preset_table import table

    rows = []
    for preset, cases, efficacy in (("reference", [1, 2, 3, 4], [0, 0, 1, 0]), ("tuned", [1, 2, 3], [1, 1, 1])):
        rows += [{"model": "m", "method": "rome", "preset": preset, "case_id": c, "efficacy": float(e),
                  "paraphrase": float(e), "multi_hop": 0.0, "specificity": 1.0, "n_specificity": 2, "edit_seconds": 1.0}
                 for c, e in zip(cases, efficacy)]
    out = table(pd.DataFrame(rows)).set_index("preset")
    assert out.loc["reference", "efficacy"].startswith("33% [") and out.loc["reference", "efficacy"].endswith("(n=3)")
    assert out.loc["tuned", "efficacy"].startswith("100% [")
    assert out.loc["reference − tuned", "efficacy"].startswith("-67 pts")
    assert out.loc["reference", "specificity (facts)"].endswith("(n=6)")


def test_single_edits_top_up_a_file_short_of_one_edit_cases_with_single_rewrites():
    """SmolLM2's case file has 73 one-edit cases: the rest of `--n` are single rewrites of multi-edit cases, each
    editing one fact, with no multi-hop question (its new answer assumes all of the case's rewrites)."""
    from experiments.preset_table import single_edit_cases, single_edits, source_id

    path = Path(__file__).parent / "fixtures" / "mquake_cf3k_small.json"
    cases = load_mquake(path)
    n_single = sum(c.n_edits == 1 for c in cases)
    n_rewrites = sum(c.n_edits for c in cases if c.n_edits > 1)
    edits = single_edits(path, n_single + 2, seed=0)
    assert len(edits) == n_single + min(2, n_rewrites)
    by_id = {c.case_id: c for c in cases}
    for e in edits:
        assert e.n_edits == 1
        source = by_id[source_id(e)]
        assert e.requested_rewrite[0] in source.requested_rewrite
        assert bool(e.questions) == (source.n_edits == 1)
    assert [c.case_id for c in single_edits(path, 1, seed=3)] == [c.case_id for c in single_edit_cases(path, 1, seed=3)]
    # a single rewrite's paraphrase asks its own hop only, the one its rewrite edits
    from ace_interp.evaluation.protocol import edited_hop_indices

    for e in edits:
        assert edited_hop_indices(e) == [h for h in e.edited_hops if h is not None]


def test_paraphrase_cells_that_asked_another_edits_hop_are_left_empty():
    from experiments.preset_table import own_paraphrases_only

    rows = pd.DataFrame({"n_edits": [1, 1, 2], "n_paraphrase": [1, 2, 2], "paraphrase": [1.0, 0.5, 0.5]})
    assert own_paraphrases_only(rows).paraphrase.isna().tolist() == [False, True, False]


def test_preset_table_leaves_missing_multi_hop_verdicts_out_of_their_cells():
    from experiments.preset_table import table

    rows = [{"model": "m", "method": "rome", "preset": preset, "case_id": c, "efficacy": 1.0, "paraphrase": 1.0,
             "multi_hop": hop, "specificity": 1.0, "n_specificity": 1, "edit_seconds": 1.0}
            for preset in ("reference", "tuned") for c, hop in ((1, 1.0), ("2/edit-0", float("nan")), (3, 0.0))]
    out = table(pd.DataFrame(rows)).set_index("preset")
    assert out.loc["reference", "multi_hop"].startswith("50% [") and out.loc["reference", "multi_hop"].endswith("(n=2)")
    assert out.loc["reference", "efficacy"].endswith("(n=3)")
    assert out.loc["reference − tuned", "multi_hop"].startswith("+0 pts")


def test_batch_sweep_splits_each_request_into_its_target_and_its_write(tiny_model):
    """`smollm2_batch_sweep.target_and_write`: one row per request, in order, with the target optimisation's end
    (p(target) in [0, 1], a stop reason, ‖δ‖/‖z₀‖ > 0 at the written site) and the after-write verdicts passed in."""
    import warnings

    from ace_interp.editing import EditRequest, edit
    from experiments.smollm2_batch_sweep import target_and_write

    requests = [EditRequest("the capital of {}", "france", "tokyo", "paris"),
                EditRequest("the language of {}", "spain", "japanese", "spanish")]
    for method in ("pmet", "memit"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a random tiny model may miss a target; the rows still describe it
            with edit(tiny_model, requests, method) as applied:
                rows = target_and_write(applied, [True, False], [False, True])
        assert [r["subject"] for r in rows] == ["france", "spain"]
        assert [(r["greedy_after_write"], r["new_beats_true_after_write"]) for r in rows] == [(True, False), (False, True)]
        assert all(0.0 <= r["target_prob"] <= 1.0 and r["delta_ratio"] > 0 and r["stop_reason"] for r in rows), rows
        assert {r["delta_site"] for r in rows} == {"mlp" if method == "pmet" else "resid"}
        assert all(r["delta_norm"] > 0 for r in rows)
