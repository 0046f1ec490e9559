"""General ability after an edit: perplexity on a fixed held-out text sample, relative to the unedited model.

    >>> texts = heldout_texts(bridge)                  # fixed sample, never the covariance corpus
    >>> base = perplexity(bridge, texts)               # e.g. 21.4
    >>> with edit(bridge, requests, "pmet"):
    ...     ratio = perplexity(bridge, texts) / base   # 1.00 = unchanged; > 1 = the edit hurt general text

Specificity (protocol.py) asks whether unrelated *facts* survive an edit; this asks whether the model still
predicts ordinary text. The sample must not be the covariance corpus the editors' key statistics come from
(editing/covariance.py), or an edit would be judged on the text it was regularised towards:

* real models: `ace_interp/data/heldout_text.txt`, short encyclopedic paragraphs written for this project
  (one a line), not sampled from any model;
* synthetic-world toys: held-out two-hop questions of the world's evaluation split (`eval_split.json`, the
  compositions the toy never trained on), a fixed seeded sample — the covariance corpus is its training text.
  A toy is trained with the loss on answer tokens only, so it is no language model of its prompts (their
  perplexity is ~10⁶): its sample is (prompt, answer) pairs and only the answer tokens are scored.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.model.state import model_state

from ace_interp.model.architecture import hf_model

N_TOY_SENTENCES = 64


def real_heldout_texts() -> list[str]:
    """The committed held-out paragraphs for real models (one a line)."""
    path = importlib.resources.files("ace_interp.data") / "heldout_text.txt"
    return [line.strip() for line in Path(str(path)).read_text(encoding="utf-8").splitlines() if line.strip()]


Text = str | tuple[str, str]  # a whole text, or (prompt, continuation) with only the continuation scored


def world_heldout_texts(eval_split: str | Path, n: int = N_TOY_SENTENCES, seed: int = 0) -> list[tuple[str, str]]:
    """`n` held-out two-hop (question prompt, answer) pairs of a synthetic world's eval_split.json, seeded."""
    split = json.loads(Path(eval_split).read_text())
    statements = sorted((prompt, target) for prompt, target, *_ in split.get("two_hop_direct", []))
    if not statements:
        raise ValueError(f"{eval_split} has no two_hop_direct examples to measure perplexity on")
    return random.Random(seed).sample(statements, min(n, len(statements)))


def heldout_texts(bridge: TransformerBridge) -> list[Text]:
    """The model's held-out sample: its world's evaluation statements for a synthetic-world toy (its world is
    read at load time, `model.state`), the committed paragraphs for any other model."""
    world = model_state(bridge).world
    if model_state(bridge).is_toy and world is not None and (world / "eval_split.json").exists():
        return world_heldout_texts(world / "eval_split.json")
    return real_heldout_texts()


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
