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
import random
from pathlib import Path

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.model.likelihood import Text, perplexity, token_nll
from ace_interp.model.state import model_state

__all__ = ["N_TOY_SENTENCES", "Text", "heldout_texts", "perplexity", "real_heldout_texts", "token_nll",
           "world_heldout_texts"]  # perplexity and token_nll live in model.likelihood

N_TOY_SENTENCES = 64


def real_heldout_texts() -> list[str]:
    """The committed held-out paragraphs for real models (one a line)."""
    path = importlib.resources.files("ace_interp.data") / "heldout_text.txt"
    return [line.strip() for line in Path(str(path)).read_text(encoding="utf-8").splitlines() if line.strip()]


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
