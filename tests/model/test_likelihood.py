"""Text likelihood: the batched, padded computation against a text-by-text reference through the bridge."""

import math

import pytest
import torch

from ace_interp.model.likelihood import perplexity, token_nll


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
