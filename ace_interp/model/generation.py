"""Batched greedy generation that is correct on a bridged model.

Measured here (TransformerLens 4.3, transformers 5.24, SmolLM2): `bridge.generate(...)` and the wrapped
HF model's `generate(...)` with its default KV cache produce garbage after the first token ("The----"),
while `generate(..., use_cache=False)` and a plain recompute loop agree. So we generate without a KV
cache: every step re-runs the whole (short) sequence on the wrapped HF model. Prompts are left-padded
with explicit position ids, so each prompt sees the same positions it would see alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.model.architecture import hf_model


def left_padded_batch(
    bridge: TransformerBridge, prompts: Sequence[str]
) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """Token ids (left-padded, the bridge's BOS convention) and the attention mask."""
    rows = [bridge.to_tokens(p)[0] for p in prompts]
    width = max(len(r) for r in rows)
    pad = bridge.tokenizer.pad_token_id if bridge.tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    device = bridge.cfg.device
    return tokens.to(device), mask.to(device)


@torch.no_grad()
def greedy_generate(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    max_new_tokens: int = 8,
    stop_strings: Sequence[str] = ("\n",),
    batch_size: int = 16,
) -> list[str]:
    """Greedy continuations of each prompt (decoded, cut at the first stop string)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    model = hf_model(bridge)
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        tokens, mask = left_padded_batch(bridge, prompts[start : start + batch_size])
        new = torch.empty((len(tokens), 0), dtype=torch.long, device=tokens.device)
        for _ in range(max_new_tokens):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=False).logits
            next_token = logits[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
            mask = torch.cat([mask, torch.ones_like(next_token)], dim=1)
            new = torch.cat([new, next_token], dim=1)
            texts = bridge.tokenizer.batch_decode(new, skip_special_tokens=True)
            if all(any(s in t for s in stop_strings) for t in texts):
                break
        for text in bridge.tokenizer.batch_decode(new, skip_special_tokens=True):
            for s in stop_strings:
                text = text.split(s)[0]
            out.append(text)
    return out
