"""Greedy generation without a KV cache agrees with a plain one-prompt-at-a-time recompute loop."""

import torch

from ace_interp.model.generation import greedy_generate


def _reference_greedy(bridge, prompt, n):
    tokens = bridge.to_tokens(prompt)
    start = tokens.shape[1]
    with torch.no_grad():
        for _ in range(n):
            next_token = bridge(tokens)[0, -1].argmax()
            tokens = torch.cat([tokens, next_token.view(1, 1)], dim=1)
    return bridge.tokenizer.decode(tokens[0, start:], skip_special_tokens=True)


def test_batched_left_padded_generation_matches_reference(tiny_model):
    prompts = ["the capital of france is", "tokyo", "which country speaks german and"]
    got = greedy_generate(tiny_model, prompts, max_new_tokens=4, stop_strings=(), batch_size=3)
    assert got == [_reference_greedy(tiny_model, p, 4) for p in prompts]
