"""The main table: ACE's layer ablations, case sampling, its summary tables, and paired comparisons."""

import json
from types import SimpleNamespace
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from ace_interp.editing import default_hparams
from ace_interp.evaluation.checkpoint import Shard
from ace_interp.evaluation.main_table import ace_ablation_hparams, paired_comparison, sample_by_edits
from ace_interp.model import load_model


def test_ace_ablations_drop_the_top_layers_of_each_group(tiny_model_dir):
    bridge = load_model(tiny_model_dir("gptj"), device="cpu")
    full = default_hparams("ace", bridge)
    assert full.query_layers and full.value_layers
    no_q = ace_ablation_hparams(bridge, "q1")
    # the top query layer is the one nearest the value group
    assert no_q.query_layers == full.query_layers[:-1] and no_q.value_layers == full.value_layers
    if len(full.value_layers) == 1:
        with pytest.raises(ValueError, match="no value layer"):
            ace_ablation_hparams(bridge, "v1")
    else:
        assert ace_ablation_hparams(bridge, "v1").value_layers == full.value_layers[:-1]


def test_sample_by_edits_balances_the_number_of_edits():
    class Case:
        def __init__(self, i, k):
            self.case_id, self.n_edits = i, k

    cases = [Case(i, 1 + i % 3) for i in range(30)]
    sample = sample_by_edits(cases, per_edits=4, seed=1)
    assert sorted(c.n_edits for c in sample) == [1] * 4 + [2] * 4 + [3] * 4
    assert [c.case_id for c in sample] == [c.case_id for c in sample_by_edits(cases, per_edits=4, seed=1)]


def test_comparison_table_pairs_rows_on_the_same_cases_with_mcnemar():
    """ACE against PMET on 12 cases: 5 only ACE answers, 1 only PMET, 3 both, 3 neither; each prompting gets its own
    comparison, from its own rows; the numbers are evaluation.stats.paired_test's on those outcomes."""
    from ace_interp.evaluation.main_table import comparison_table
    from ace_interp.evaluation.stats import accuracy_cell, paired_test

    ace = [1] * 5 + [0] + [1] * 3 + [0] * 3
    pmet = [0] * 5 + [1] + [1] * 3 + [0] * 3
    rows = [{"model": "m", "method": method, "seed": 0, "case_id": i, "prompting": prompting,
             "multi_hop": float(v if prompting == "direct" else 1 - v)}
            for prompting in ("direct", "cot") for method, values in (("ace", ace), ("pmet", pmet))
            for i, v in enumerate(values)]
    table = comparison_table(pd.DataFrame(rows))
    lines = [line for line in table.splitlines() if "| m " in line]
    assert len(lines) == 2
    expected = paired_test(ace, pmet)
    assert expected.p_value == pytest.approx(0.21875)  # 2 * P(X <= 1), X ~ Bin(6, 1/2)
    direct = [c.strip() for c in lines[0].split("|")]
    assert "5 / 1" in direct and f"{expected.p_value:.2g}" in direct and accuracy_cell(ace) in direct
    assert f"{100 * expected.difference:+.1f} pts [{100 * expected.difference_low:+.1f}, " \
           f"{100 * expected.difference_high:+.1f}]" in direct
    assert "1 / 5" in lines[1] and "CoT" in lines[1]


def test_edited_hop_table_splits_one_edit_cases_by_the_hop_they_edit():
    import pandas as pd

    from ace_interp.data.mquake import load_mquake
    from ace_interp.evaluation.main_table import add_edited_hops, edited_hop_table
    from ace_interp.model.loading import ASSETS

    cases = load_mquake(ASSETS / "world" / "mquake_cases.json")
    one = [c for c in cases if c.n_edits == 1]
    first = next(c for c in one if c.edited_hops == [0])
    later = next(c for c in one if c.edited_hops == [1])
    two = next(c for c in cases if c.n_edits == 2)
    rows = [{"model": "m", "method": "pmet", "case_id": c.case_id, "n_edits": c.n_edits, "multi_hop": mh}
            for c, mh in ((first, 1.0), (later, 0.0), (two, 1.0))]
    per_case = add_edited_hops(pd.DataFrame(rows), cases)
    assert per_case.edited_hops.tolist() == ["0", "1", "+".join(str(h) for h in two.edited_hops)]
    table = edited_hop_table(per_case)
    from ace_interp.evaluation.stats import accuracy_cell

    # hop-0 edit followed, later-hop edit not
    assert accuracy_cell([1]) in table and accuracy_cell([0]) in table


def test_edited_hops_name_the_hop_of_each_rewrite():
    from ace_interp.data.mquake import load_mquake
    from ace_interp.model.loading import ASSETS

    for case in load_mquake(ASSETS / "world" / "mquake_cases.json")[:50]:
        for rw, hop in zip(case.requested_rewrite, case.edited_hops, strict=True):
            assert case.new_single_hops[hop].cloze == rw.prompt_text()
            # the world's cases chain their rewrites: hop 0 starts at the question's subject
            assert (hop == 0) == (rw.subject in case.questions[0])


def test_table_config_hparams_reach_the_edits(tiny_model):
    """`TableConfig.hparams` chooses a method's hyper-parameters: FT with a learning rate of 0 writes nothing,
    so its efficacy falls from the defaults' 1.0 to 0.0."""
    from dataclasses import replace

    from ace_interp.data.mquake import MQuAKECase
    from ace_interp.editing import default_hparams
    from ace_interp.evaluation.main_table import TableConfig, table_rows
    from ace_interp.evaluation.protocol import Asking, PromptStyle, evaluate

    from test_protocol import _tiny_case

    cases = [MQuAKECase.from_dict(_tiny_case(1, "tokyo", "japan", "italy", "tokyo", "rome"))]
    style = PromptStyle("raw", multi_hop=lambda case, cot: list(case.questions), single_hop=lambda q, answers, relation: q, max_new_tokens=1)
    asked = []

    def no_steps(method, bridge):
        asked.append((method, bridge))
        return replace(default_hparams(method, bridge), lr=0.0)

    efficacy = {}
    for name, choose in (("defaults", None), ("no steps", no_steps)):
        config = TableConfig(methods=("ft",), n_specificity=0, ablations=(), ace_variants=(), cot=False,
                             hparams=choose)
        rows = table_rows(tiny_model, config)
        per_case = evaluate(tiny_model, cases, rows, askings=[Asking("direct", style)], n_specificity=0,
                            known_only=False, progress=False).per_case
        efficacy[name] = float(per_case.efficacy.iloc[0])
    assert asked == [("ft", tiny_model)]
    assert efficacy == {"defaults": 1.0, "no steps": 0.0}, efficacy


def test_paired_counts_cases_only_one_method_answers():
    rows = [(1, "pmet", 0), (1, "ace", 1), (2, "pmet", 1), (2, "ace", 1), (3, "pmet", 0), (3, "ace", 0),
            (4, "pmet", 0), (4, "ace", 1)]
    per_case = pd.DataFrame(rows, columns=["case_id", "method", "multi_hop"])
    result = paired_comparison(per_case, "ace", "pmet")
    assert result["cases"] == 4 and result["only ace"] == 2 and result["only pmet"] == 0
    assert result["difference"] == 0.5 and result["sign-test p"] == 0.5


def test_table_report_rebuilds_the_committed_tables_from_their_rows():
    """`ace main-table` wrote main_table.md, main_table_per_case.csv and run.json together; the markdown follows
    from the rows (every committed table folder with a run.json)."""
    import json

    from ace_interp.evaluation.main_table import table_report

    # tables written by today's `ace main-table` (a reconstructed run.json marks a table made by older code,
    # in the older layout; docs/findings name them)
    folders = [p.parent for p in (Path(__file__).resolve().parents[2] / "results").glob("**/run.json")
               if (p.parent / "main_table.md").exists() and "archive" not in p.parts
               and not json.loads(p.read_text()).get("reconstructed")]
    if not folders:
        pytest.skip("no committed main table with a run.json")
    for root in folders:
        rows = pd.read_csv(root / "main_table_per_case.csv")
        seeds = json.loads((root / "run.json").read_text())["seeds"]
        assert table_report(rows, seeds) + "\n" == (root / "main_table.md").read_text(), root


def test_chain_of_thought_rows_are_asked_of_the_same_edit(tiny_model, monkeypatch):
    """`TableConfig.cot_methods` chooses the rows asked with chain of thought; direct and CoT rows of a method come
    from one edit per case (the edit function runs once per case and row, not once per prompting)."""
    import ace_interp.evaluation.protocol as protocol
    from ace_interp.data.mquake import MQuAKECase
    from ace_interp.evaluation.main_table import TableConfig, table_rows
    from ace_interp.evaluation.protocol import Asking, PromptStyle, evaluate

    from test_protocol import _tiny_case

    calls = []
    real_edit = protocol.edit
    monkeypatch.setattr(protocol, "edit", lambda *a, **k: calls.append(a[2]) or real_edit(*a, **k))
    cases = [MQuAKECase.from_dict(_tiny_case(1, "tokyo", "japan", "italy", "tokyo", "rome"))]
    style = PromptStyle("raw", multi_hop=lambda case, cot: list(case.questions), single_hop=lambda q, answers, relation: q,
                        max_new_tokens=1, cot_max_new_tokens=2)
    askings = [Asking("direct", style), Asking("cot", style, cot=True)]
    config = TableConfig(methods=(None, "rome", "ft"), cot_methods=(None, "rome"), n_specificity=0, ablations=(),
                         ace_variants=(), cot=True)
    rows = evaluate(tiny_model, cases, table_rows(tiny_model, config), askings=askings, n_specificity=0,
                    known_only=False, progress=False).per_case
    assert list(zip(rows.method, rows.prompting)) == [("base", "direct"), ("base", "cot"), ("rome", "direct"),
                                                      ("rome", "cot"), ("ft", "direct")]
    assert calls == ["rome", "ft"]


def test_ace_variant_rows_switch_on_the_implicit_subject_write(tiny_model):
    """`TableConfig.ace_variants` adds a row of ACE with an option on: 'implicit' writes the implicit subject at
    `implicit_subject_layers` (layer n − 2 on models of ≤ 6 layers), everything else left at ACE's defaults."""
    from dataclasses import replace

    from ace_interp.data.mquake import MQuAKECase
    from ace_interp.editing import implicit_subject_layers
    from ace_interp.evaluation.main_table import TableConfig, ace_extra_rows, ace_variant_hparams
    from ace_interp.evaluation.protocol import PromptStyle
    from ace_interp.model.architecture import model_spec

    from test_protocol import _tiny_case

    n = model_spec(tiny_model).n_layers
    assert implicit_subject_layers(tiny_model) == (max(0, n - 2),)
    variant = ace_variant_hparams(tiny_model, "implicit")
    assert variant == replace(default_hparams("ace", tiny_model), implicit_layers=(max(0, n - 2),))
    with pytest.raises(ValueError, match="unknown ACE variant 'loud'"):
        ace_variant_hparams(tiny_model, "loud")
    config = TableConfig(methods=("ace",), n_specificity=0, ablations=("q1", "v1"), cot=False)
    labels = [label for label, _ in ace_extra_rows(tiny_model, config)]
    assert labels[-1] == "ace +implicit" and labels[0] == "ace -q1"
    cases = [MQuAKECase.from_dict(_tiny_case(1, "tokyo", "japan", "italy", "tokyo", "rome"))]
    style = PromptStyle("raw", multi_hop=lambda case, cot: list(case.questions), single_hop=lambda q, answers, relation: q, max_new_tokens=1)
    from ace_interp.evaluation.main_table import table_rows
    from ace_interp.evaluation.protocol import Asking, evaluate

    rows = evaluate(tiny_model, cases, table_rows(tiny_model, replace(config, ablations=())),
                    askings=[Asking("direct", style)], n_specificity=0, known_only=False, progress=False).per_case
    assert list(rows.method) == ["ace", "ace +implicit"]


def test_main_table_command_passes_its_rows_to_the_table(monkeypatch):
    """`ace main-table --methods … --ace-variants … --no-ablations` reaches `TableConfig` as asked (the run itself is
    replaced: it takes minutes per model)."""
    import ace_interp.evaluation.main_table as main_table
    from ace_interp.cli import main

    seen = {}

    def fake_run(config, cases, readme, command):
        seen.update(config=config, cases=cases, readme=readme, command=command)
        return "table"

    monkeypatch.setattr(main_table, "run_main_table", fake_run)
    assert main(["main-table", "--models", "toy-gptj", "--methods", "base", "pmet", "ace", "--ace-variants",
                 "--no-ablations", "--no-readme", "--seeds", "3", "4"]) == 0
    config = seen["config"]
    assert config.methods == (None, "pmet", "ace") and config.ace_variants == () and config.ablations == ()
    assert config.seeds == (3, 4) and config.models == ("toy-gptj",) and seen["readme"] is None
    assert main(["main-table", "--models", "toy-gptj", "--no-readme"]) == 0
    assert seen["config"].methods == main_table.METHODS and seen["config"].ace_variants == ("implicit",)
    # the README is written only on request (its headline table is generated from results/)
    assert main(["main-table", "--models", "toy-gptj"]) == 0 and seen["readme"] is None
    assert main(["main-table", "--models", "toy-gptj", "--readme"]) == 0 and seen["readme"].name == "README.md"
    # every case by default, both protocols
    assert seen["config"].per_edits is None and seen["config"].protocols == ("per-case", "batched")
    assert seen["config"].preset == "tuned" and not seen["config"].resume and seen["config"].shard is None
    assert main(["main-table", "--models", "toy-gptj", "--preset", "reference", "--shard", "1/2", "--resume"]) == 0
    assert seen["config"].preset == "reference" and seen["config"].resume and seen["config"].shard == Shard(1, 2)
    assert seen["config"].rows_from == ()
    assert main(["main-table", "--models", "toy-gptj", "--rows-from", "results/a", "results/b"]) == 0
    assert seen["config"].rows_from == (Path("results/a"), Path("results/b"))


def test_a_table_with_saved_items_is_not_restarted_without_resume(tmp_path):
    """An earlier run's items under <out>/<model>/checkpoint: a run without --resume (or --shard) stops before
    loading the model, naming the folder, instead of mixing or discarding them."""
    from ace_interp.evaluation.main_table import TableConfig, evaluate_model

    saved = tmp_path / "toy-gptj" / "checkpoint" / "per-case-seed-0"
    saved.mkdir(parents=True)
    (saved / "run.1.x.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="--resume"):
        evaluate_model("toy-gptj", Path("unused.json"), TableConfig(out=tmp_path))


def test_a_resumed_run_reads_a_finished_model_table_only_with_the_same_settings(tmp_path):
    """`finished_table`: a model folder whose run.json records the same settings and case file is read back; another
    seed, preset or case file runs again."""
    from ace_interp.evaluation.main_table import finished_table
    from ace_interp.provenance import write_run_json

    cases = tmp_path / "cases.json"
    cases.write_text("[]")
    settings = dict(hparams={"rome": {"layer": 1}}, preset="tuned", seeds=(0,), protocols=["per-case"], batch_size=100,
                    promptings=["direct"], per_edits=None, n_specificity=5, perplexity_texts=0)
    folder = tmp_path / "toy"
    assert finished_table(folder, settings, cases) is None  # nothing there yet
    write_run_json(folder, case_file=cases, wall_s=1.0, **settings)
    pd.DataFrame({"case_id": [1], "method": ["rome"], "multi_hop": [1.0]}).to_csv(folder / "per_case.csv", index=False)
    assert finished_table(folder, settings, cases).case_id.tolist() == [1]
    assert finished_table(folder, {**settings, "seeds": (1,)}, cases) is None
    assert finished_table(folder, {**settings, "hparams": {"rome": {"layer": 2}}}, cases) is None
    other = tmp_path / "other.json"
    other.write_text("[1]")
    assert finished_table(folder, settings, other) is None


def _fake_table_run(monkeypatch, calls: list, table_rows):
    """main_table with the model, prompts and protocols faked: each protocol call records (protocol, row labels) in
    `calls`, saves its items in the checkpoint as the protocols do, and answers every case right."""
    import ace_interp.evaluation.main_table as main_table
    from ace_interp.evaluation.protocol import UNEDITED_KEY, EvalResult

    def fake(kind):
        def run(bridge, cases, rows, *args, checkpoint=None, **kwargs):
            calls.append((kind, [r.label for r in rows]))
            checkpoint.add(UNEDITED_KEY, [{}], seconds=5.0)  # as the protocols save the unedited model's answers
            checkpoint.add((kind, "all cases"), [], seconds=2.0)
            return EvalResult(pd.DataFrame([{"case_id": c.case_id, "method": r.label, "n_edits": c.n_edits,
                                             "multi_hop": 1.0, "prompting": "direct", "cot": False}
                                            for c in cases for r in rows]))
        return run

    monkeypatch.setattr(main_table, "load_model", lambda name: None)
    monkeypatch.setattr(main_table, "hop_prompts_for", lambda bridge, path: None)
    monkeypatch.setattr(main_table, "askings_for", lambda bridge, promptings: [SimpleNamespace(label="direct")])
    monkeypatch.setattr(main_table, "table_rows", lambda bridge, config: table_rows())
    monkeypatch.setattr(main_table, "evaluate", fake("per-case"))
    monkeypatch.setattr(main_table, "evaluate_batched", fake("batched"))


CONTAMINATION_CASES = Path(__file__).parents[1] / "fixtures" / "mquake_contamination.json"


def test_a_resumed_run_keeps_the_protocols_an_earlier_table_of_its_settings_holds(tmp_path, monkeypatch):
    """A model table assembled for the per-case protocol alone, then resumed with both: its per-case rows are kept
    (no per-case evaluation runs again), the batched protocol runs, and run.json says where the kept rows came from."""
    from ace_interp.evaluation.main_table import MethodRow, TableConfig, evaluate_model

    calls = []
    _fake_table_run(monkeypatch, calls, lambda: [MethodRow("ft", "ft", {"lr": 1})])
    config = TableConfig(out=tmp_path, perplexity=False, protocols=("per-case",))
    first = evaluate_model("toy", CONTAMINATION_CASES, config)
    assert calls == [("per-case", ["ft"])] and set(first.protocol) == {"per-case"}
    record = json.loads((tmp_path / "toy" / "run.json").read_text())
    assert (record["item_seconds"], record["unedited_answers_seconds"]) == (2.0, 5.0)  # reported apart
    assert "rows_kept_from" not in record
    both = evaluate_model("toy", CONTAMINATION_CASES, replace(config, protocols=("per-case", "batched"), resume=True))
    assert [kind for kind, _ in calls] == ["per-case", "batched"]
    assert sorted(set(both.protocol)) == ["batched k=100", "per-case"] and len(both) == 2 * len(first)
    record = json.loads((tmp_path / "toy" / "run.json").read_text())
    assert record["protocols"] == ["per-case", "batched"]
    assert record["rows_kept_from"][0]["kept"] == [{"seed": 0, "protocol": "per-case", "rows": ["ft"]}]
    assert record["rows_kept_from"][0]["item_seconds"] == 2.0  # how the kept rows were made
    # another batch size is another batched table; the per-case rows do not depend on it and are kept
    evaluate_model("toy", CONTAMINATION_CASES, replace(config, protocols=("per-case", "batched"), batch_size=2,
                                                       resume=True))
    assert [kind for kind, _ in calls[2:]] == ["batched"]
    # batched rows of a table whose run.json names no packing (made before it was recorded) are run again
    run = tmp_path / "toy" / "run.json"
    run.write_text(json.dumps({k: v for k, v in json.loads(run.read_text()).items() if k != "batching"}))
    evaluate_model("toy", CONTAMINATION_CASES, replace(config, protocols=("per-case", "batched"), batch_size=2,
                                                       resume=True))
    assert [kind for kind, _ in calls[3:]] == ["batched"]


def test_a_resumed_run_runs_only_the_rows_its_tables_do_not_hold(tmp_path, monkeypatch):
    """A table gains rows: resumed with one more row, only that row runs; a row whose hyper-parameters changed runs
    again; rows of another output folder's table (--rows-from) are kept too, this folder's first."""
    from ace_interp.evaluation.main_table import MethodRow, TableConfig, evaluate_model

    calls, rows = [], [MethodRow("base", None), MethodRow("pmet", "pmet", {"lr": 1})]
    _fake_table_run(monkeypatch, calls, lambda: list(rows))
    config = TableConfig(out=tmp_path / "core", perplexity=False, protocols=("per-case",))
    first = evaluate_model("toy", CONTAMINATION_CASES, config)
    rows.append(MethodRow("ace -q1", "ace", {"q": 1}, ("direct",)))
    grown = evaluate_model("toy", CONTAMINATION_CASES, replace(config, resume=True))
    assert calls[1:] == [("per-case", ["ace -q1"])]
    assert sorted(set(grown.method)) == ["ace -q1", "base", "pmet"] and len(grown) == 3 * len(first) // 2
    pd.testing.assert_frame_equal(  # the kept rows are the earlier table's
        grown[grown.method != "ace -q1"].reset_index(drop=True), first.reset_index(drop=True), check_like=True)
    # pmet with other hyper-parameters: run again; base and ace -q1 kept
    rows[1] = MethodRow("pmet", "pmet", {"lr": 2})
    evaluate_model("toy", CONTAMINATION_CASES, replace(config, resume=True))
    assert calls[2:] == [("per-case", ["pmet"])]
    # a new folder lends nothing without --rows-from; with it, only the rows it lacks run
    rows.append(MethodRow("ace +implicit", "ace", {"implicit": True}, ("direct",)))
    elsewhere = replace(config, out=tmp_path / "ablations", rows_from=(tmp_path / "core",))
    evaluate_model("toy", CONTAMINATION_CASES, elsewhere)
    assert calls[3:] == [("per-case", ["ace +implicit"])]
    record = json.loads((tmp_path / "ablations" / "toy" / "run.json").read_text())
    assert record["rows_kept_from"][0]["folder"] == str(tmp_path / "core" / "toy")
    assert record["rows_kept_from"][0]["kept"][0]["rows"] == ["ace -q1", "base", "pmet"]


def test_the_combined_table_covers_model_tables_of_earlier_commands(tmp_path, monkeypatch):
    """Models run by separate commands (toys with ablations, SmolLM2 without) share one combined table in `out`."""
    import ace_interp.evaluation.main_table as main_table
    from ace_interp.evaluation.main_table import TableConfig, run_main_table
    from ace_interp.provenance import write_run_json

    def rows(model):
        return pd.DataFrame([{"case_id": i, "method": m, "n_edits": 1, "multi_hop": float(i % 2), "prompting": "direct",
                              "cot": False, "seed": 0, "protocol": "per-case", "model": model, "edited_hops": "0"}
                             for i in range(4) for m in ("base", "pmet")])

    earlier = tmp_path / "toy-gptj"
    earlier.mkdir()
    rows("toy-gptj").to_csv(earlier / "per_case.csv", index=False)
    write_run_json(earlier, command="ace main-table --models toy-gptj")
    (tmp_path / "half-done").mkdir()  # a model folder without a finished table is not read
    rows("half-done").to_csv(tmp_path / "half-done" / "per_case.csv", index=False)
    monkeypatch.setattr(main_table, "evaluate_model", lambda model, path, config: rows(model))
    repo_cases = Path(__file__).resolve().parents[2] / "assets" / "real_facts" / "smollm2_known.json"
    run_main_table(TableConfig(models=("smollm2-135m",), out=tmp_path), {"smollm2-135m": repo_cases},
                   None, "ace main-table --models smollm2-135m")
    combined = pd.read_csv(tmp_path / "main_table_per_case.csv")
    assert sorted(combined.model.unique()) == ["smollm2-135m", "toy-gptj"]
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["models"] == ["smollm2-135m", "toy-gptj"]
    assert record["earlier_model_tables"] == {"toy-gptj": "ace main-table --models toy-gptj"}
    assert record["case_files"] == {"smollm2-135m": "assets/real_facts/smollm2_known.json"}  # the same in any checkout
    assert "toy-gptj" in (tmp_path / "main_table.md").read_text()


def test_the_interim_report_tables_what_a_run_in_progress_has_saved(tmp_path):
    """Items of two shards (the unedited answers among them) read back as per-case rows; ACE is compared with PMET
    on the cases both have finished, and the report says it is interim."""
    from ace_interp.evaluation.checkpoint import Checkpoint
    from ace_interp.evaluation.main_table import TableConfig, interim_report
    from ace_interp.evaluation.protocol import UNEDITED_KEY

    cases = Path(__file__).resolve().parents[1] / "fixtures" / "mquake_contamination.json"
    folder = tmp_path / "toy" / "checkpoint" / "per-case-seed-0"
    fingerprint = {"protocol": "per-case", "seed": 0, "rows": {"ace": 1, "pmet": 2}}
    answers = {("pmet", 1): 0.0, ("pmet", 2): 1.0, ("pmet", 3): 0.0, ("ace", 1): 1.0, ("ace", 2): 1.0}
    for index in (0, 1):
        store = Checkpoint(folder, fingerprint, part=f"shard-{index}-of-2")
        if index == 0:
            store.add(UNEDITED_KEY, [{"known": {}, "specificity": {}, "perplexity": None}], 1.0)
        for i, ((method, case), right) in enumerate(answers.items()):
            if i % 2 == index:
                store.add((method, case), [{"case_id": case, "method": method, "n_edits": 1, "prompting": "direct",
                                            "multi_hop": right}], 1.0)
        store.close()
    report = interim_report(TableConfig(models=("toy",), out=tmp_path), {"toy": cases})
    assert report.startswith("INTERIM")
    assert "toy per-case ace 2; toy per-case pmet 3" in report
    comparison = [line for line in report.splitlines() if "| ace " in line and "| pmet " in line]
    assert len(comparison) == 1 and "n=2" in comparison[0] and "+50.0 pts" in comparison[0]
    assert "no saved items" in interim_report(TableConfig(models=("other",), out=tmp_path), {"other": cases})
