"""Vocabulary projection against a direct per-neuron computation."""

import torch

from ace_interp.analysis.vocab import neuron_logit_directions, neuron_top_tokens
from ace_interp.model import apply_final_norm, sub_values, unembed


def test_projection_ranks_match_unembedding_of_normed_subvalue(tiny_model):
    neurons = [(0, 3), (2, 5), (1, 0)]
    directions = neuron_logit_directions(tiny_model, neurons)
    for row, (l, k) in zip(directions, neurons):
        v = sub_values(tiny_model, l)[k]
        # the frozen-scale final norm is affine: N(x) - N(0) is linear in x; subtract the bias part
        reference = unembed(tiny_model, apply_final_norm(tiny_model, v, torch.ones(1))) - unembed(
            tiny_model, apply_final_norm(tiny_model, torch.zeros_like(v), torch.ones(1)))
        torch.testing.assert_close(row, reference, rtol=1e-4, atol=1e-5)
    table = neuron_top_tokens(tiny_model, neurons, k=3)
    assert list(table.columns) == ["layer", "neuron", "top_tokens"] and all(len(t) == 3 for t in table.top_tokens)
    best = tiny_model.tokenizer.decode([int(directions[0].argmax())])
    assert table.top_tokens[0][0] == best
