"""Known-fact filtering (`evaluation.filtering`): the bookkeeping with an oracle generator, and SmolLM2 on one chain."""

from pathlib import Path

import pandas as pd
import pytest

from ace_interp.data.mquake import load_mquake
from ace_interp.evaluation import filtering

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mquake_cf3k_small.json"


def _oracle(known_answers, known_questions):
    """A fake generator: answers a prompt correctly iff its last line asks something it 'knows'."""

    def generate(bridge, prompts, max_new_tokens=8, batch_size=32, stop_at_newline=True, progress=False):
        out = []
        for p in prompts:
            hit = known_answers.get(p) or known_questions.get(p.rsplit("Q: ", 1)[-1].removesuffix("\nA:"))
            out.append(f" {hit}\n" if hit else " I do not know\n")
        return out

    return generate


def test_filter_bookkeeping_with_an_oracle(monkeypatch):
    cases = load_mquake(FIXTURE)
    # the oracle knows every cloze of cases 1 and 3, and only case 1's multi-hop question
    clozes = {h.cloze: h.answer for c in cases if c.case_id in (1, 3) for h in c.single_hops}
    questions = {cases[0].questions[1]: cases[0].answer}
    monkeypatch.setattr(filtering, "generate_greedy", _oracle(clozes, questions))
    kept, report = filtering.filter_known(None, cases)
    assert [c.case_id for c in kept] == [1]
    r = report.set_index("case_id")
    assert bool(r.at[1, "kept"]) and bool(r.at[1, "multi_hop_direct"])  # second paraphrase counted
    assert bool(r.at[3, "all_hops_known"]) and not bool(r.at[3, "multi_hop_known"])
    assert pd.isna(r.at[2, "multi_hop_direct"])  # not asked: a hop is unknown
    assert (report["kept"] == report["all_hops_known"] & report["multi_hop_known"]).all()
    hops = report.attrs["single_hops"]
    assert len(hops) == len({h.cloze for c in cases for h in c.single_hops})
    s = filtering.summarize(cases, report)
    assert s["kept"] == 1 and s["by_hops"]["2"] == {"candidates": 2, "kept": 1}
    assert s["single_hop_facts"]["known"] == len(filtering.known_facts(cases, report)) == len(clozes)
    assert "KEPT: 1" in filtering.format_summary(s)
    with pytest.raises(ValueError, match="no cases"):
        filtering.filter_known(None, [])


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_knows_the_eiffel_tower_chain(smollm2):
    cases = [c for c in load_mquake(FIXTURE) if c.case_id == 1]
    kept, report = filtering.filter_known(smollm2, cases)
    hops = report.attrs["single_hops"]
    assert hops["known"].all(), hops[["cloze", "cloze_generation", "question_generation"]]
