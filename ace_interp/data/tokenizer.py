"""A word-level HF tokenizer for a synthetic world.

Ids 0..3 are [UNK], [BOS], [EOS], [PAD] (each its own id); then the world's words, sorted. The tokenizer
splits on whitespace and adds no special tokens itself: `encode_example` prepends [BOS] for training, and
`load_model` reads `"prepend_bos": true` from the toy's training.json (`model.loading.model_prepends_bos`) so
the bridge prepends it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerFast

from ace_interp.data.world import World
from ace_interp.model.random_init import SPECIAL_TOKENS, word_level_tokenizer

UNK_ID, BOS_ID, EOS_ID, PAD_ID = range(4)
assert SPECIAL_TOKENS == ["[UNK]", "[BOS]", "[EOS]", "[PAD]"]


def world_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over every word the world's text uses (no BOS added by the tokenizer)."""
    tok = word_level_tokenizer(world.words)
    tok.model_max_length = 128
    return tok


_VOCAB_CACHE: dict[int, tuple[PreTrainedTokenizerFast, dict[str, int]]] = {}


def _vocab(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    # get_vocab() rebuilds a dict on every call; cache it per tokenizer object (kept alive by the cache)
    hit = _VOCAB_CACHE.get(id(tokenizer))
    if hit is None or hit[0] is not tokenizer:
        hit = _VOCAB_CACHE[id(tokenizer)] = (tokenizer, tokenizer.get_vocab())
    return hit[1]


def encode_words(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Word ids of `text`; raises on a word outside the vocabulary (it would silently become [UNK])."""
    vocab = _vocab(tokenizer)
    ids = []
    for w in text.split():
        if w not in vocab:
            raise ValueError(f"word {w!r} is not in the world's vocabulary (text: {text!r})")
        ids.append(vocab[w])
    return ids


def encode_example(
    tokenizer: PreTrainedTokenizerFast, prompt: str, target: str, eos: bool = False
) -> tuple[list[int], int]:
    """[BOS] + prompt + target (+ [EOS]) as ids, and the index of the first target token."""
    p = [BOS_ID, *encode_words(tokenizer, prompt)]
    t = encode_words(tokenizer, target) + ([EOS_ID] if eos else [])
    return p + t, len(p)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    """Right-padded [batch, max_len] ids (causal attention never sees the padding after a row)."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out
