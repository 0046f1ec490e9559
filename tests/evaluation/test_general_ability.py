"""The held-out text samples of the general-ability column (their perplexity: tests/model/test_likelihood.py)."""

import pytest

from ace_interp.evaluation.general_ability import heldout_texts, real_heldout_texts, world_heldout_texts
from ace_interp.model.loading import ASSETS


def test_heldout_samples_are_fixed_and_not_the_covariance_corpus():
    real = real_heldout_texts()
    assert len(real) >= 20 and real == real_heldout_texts()
    split = ASSETS / "world" / "eval_split.json"
    if not split.exists():
        pytest.skip("no synthetic world in assets/")
    toy = world_heldout_texts(split)
    assert len(toy) == 64 and toy == world_heldout_texts(split)
    corpus = set((ASSETS / "world" / "corpus_sample.txt").read_text().splitlines())
    assert not corpus & {f"{p} {a}" for p, a in toy}  # held-out compositions: never in the toy's training (covariance) text


def test_a_toy_model_gets_its_worlds_sample(tiny_model):
    from ace_interp.model import load_model

    toy = load_model("toy-gptj")
    assert heldout_texts(toy) == world_heldout_texts(ASSETS / "world" / "eval_split.json")
    assert heldout_texts(tiny_model) == real_heldout_texts()
