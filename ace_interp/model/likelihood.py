"""Likelihood of text under a model: summed next-token NLL per text and perplexity.

    >>> perplexity(bridge, ["Paris is the capital of France."])          # exp(mean NLL per predicted token)
    >>> token_nll(bridge, [("The capital of France is", "Paris")])      # [2, n]: NLL of "Paris" only, 1 token

Texts are tokenised as the bridge tokenises a prompt (`bridge.to_tokens`, the model's own BOS convention,
`model.loading`). Used by the evaluation's general-ability column (`evaluation.general_ability`) and the editing
side-effect monitor (`editing.monitor`), so both report one perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.model.architecture import hf_model

Text = str | tuple[str, str]  # a whole text, or (prompt, continuation) with only the continuation scored



def _scored_tokens(bridge: TransformerBridge, text: Text) -> tuple[Tensor, int]:
    """The tokens of a text (`bridge.to_tokens`, its BOS convention) and the first position that is scored: 1 for a
    whole text, the prompt's length for a (prompt, continuation) pair."""
    if isinstance(text, str):
        return bridge.to_tokens(text)[0], 1
    prompt, continuation = text
    return bridge.to_tokens(f"{prompt} {continuation}")[0], bridge.to_tokens(prompt).shape[1]


@torch.no_grad()
def token_nll(bridge: TransformerBridge, texts: Sequence[Text], batch_size: int = 16) -> Float[Tensor, "2 n"]:
    """Summed next-token negative log-likelihood of each text's scored tokens (`_scored_tokens`) and, in a second
    row, their number: shape [2, n]."""
    if isinstance(texts, str) or not texts:
        raise ValueError("pass a non-empty list of texts")
    model = hf_model(bridge)
    device = next(model.parameters()).device
    out = torch.zeros(2, len(texts), dtype=torch.float64)
    pad = bridge.tokenizer.pad_token_id or 0
    for start in range(0, len(texts), batch_size):
        rows = [_scored_tokens(bridge, t) for t in texts[start : start + batch_size]]
        width = max(len(r) for r, _ in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        scored = torch.zeros_like(ids)
        for i, (r, first) in enumerate(rows):  # right padding: a row's positions match a lone run
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
            scored[i, first : len(r)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        log_probs = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]  # [b, s-1]: token j+1 given ..j
        predicted = scored[:, 1:].to(log_probs.dtype)
        out[0, start : start + len(rows)] = -(log_probs * predicted).sum(-1).double()
        out[1, start : start + len(rows)] = predicted.sum(-1).double()
    return out


def perplexity(bridge: TransformerBridge, texts: Sequence[Text], batch_size: int = 16) -> float:
    """exp(total NLL / total predicted tokens) over `texts` (token-weighted, as language-model perplexity is)."""
    nll = token_nll(bridge, texts, batch_size)
    return math.exp(float(nll[0].sum() / nll[1].sum()))
