"""How far an edit's write reaches into the multi-hop question (analysis.edit_reach), on the shipped toy model."""

import pytest
import torch

from ace_interp.analysis.edit_reach import reach_summary, write_reach
from ace_interp.data.mquake import load_mquake
from ace_interp.model import load_model
from ace_interp.model.loading import ASSETS


@pytest.fixture(scope="module")
def toy():
    return load_model("toy-gptj", device="cpu")


@pytest.fixture(scope="module")
def one_edit_cases():
    cases = [c for c in load_mquake(ASSETS / "world" / "mquake_cases.json") if c.n_edits == 1]
    return {hop: next(c for c in cases if c.edited_hops == [hop]) for hop in (0, 1)}


def test_reach_is_one_at_the_edited_key_and_the_model_is_restored(toy, one_edit_cases):
    before = {k: v.clone() for k, v in toy.original_model.state_dict().items()}
    reach = write_reach(toy, one_edit_cases[0], method="memit")
    own = reach[~reach.is_question]
    assert own.reach.max() == pytest.approx(1.0, abs=1e-4)  # the rewrite prompt's subject token is the reference
    after = toy.original_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_later_hop_edit_barely_reaches_the_question(toy, one_edit_cases):
    """A rewrite of the question's own subject reaches its tokens at full strength; a rewrite of a bridge entity
    the question never names reaches it at a fraction (measured 0.06-0.36 on 13 such cases; docs/ace.md)."""
    first = reach_summary(write_reach(toy, one_edit_cases[0])).max_reach.item()
    later = reach_summary(write_reach(toy, one_edit_cases[1])).max_reach.item()
    assert first > 0.9
    assert later < 0.5 and later < first / 2
