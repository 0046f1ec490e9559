"""Held-out perplexity: the batched, padded computation against a text-by-text reference through the bridge."""

import math

import pytest
import torch

from ace_interp.evaluation.general_ability import heldout_texts, perplexity, real_heldout_texts, token_nll, world_heldout_texts
from ace_interp.model.loading import ASSETS


def test_batched_nll_matches_one_text_at_a_time_through_the_bridge(tiny_model):
    texts = ["the capital of japan is tokyo", "tokyo", "the country of the city berlin is germany and more words",
             ("the capital of japan is", "tokyo")]  # a pair: only the continuation is scored
    fast = token_nll(tiny_model, texts, batch_size=2)
    for i, text in enumerate(texts):
        whole = text if isinstance(text, str) else " ".join(text)
        first = 1 if isinstance(text, str) else tiny_model.to_tokens(text[0]).shape[1]
        tokens = tiny_model.to_tokens(whole)
        with torch.no_grad():
            log_probs = tiny_model(tokens).double().log_softmax(-1)[0]  # the bridge's own forward, no padding
        reference = -sum(float(log_probs[j - 1, tokens[0, j]]) for j in range(first, tokens.shape[1]))
        assert fast[1, i] == tokens.shape[1] - first
        assert float(fast[0, i]) == pytest.approx(reference, rel=1e-4, abs=1e-4)
    assert perplexity(tiny_model, texts) == pytest.approx(math.exp(float(fast[0].sum() / fast[1].sum())))
    with pytest.raises(ValueError, match="non-empty list"):
        token_nll(tiny_model, "one string")


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
