"""Random-initialised HF models built offline from configs: the test bed for every architecture path.

`build_random_model("gptj", folder)` writes a tiny GPT-J-style checkpoint (with a word-level tokenizer)
that `load_model(folder)` boots like any real model. Benchmarks use `shape="gptj-6b"` / `"qwen3-8b"`
for full-size random models (timing only).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPTJConfig,
    GPTJForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

TINY_ARCHITECTURES = ("gpt2", "gptj", "qwen3", "llama", "gemma3")

SPECIAL_TOKENS = ["[UNK]", "[BOS]", "[EOS]", "[PAD]"]
_TINY_WORDS = (
    "the capital of france is paris germany berlin italy rome spain madrid language french german italian "
    "spanish a an in on and city country located speaks which what where who team plays sport football "
    "tennis continent europe asia japan tokyo japanese q : ."
).split()


def word_level_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer; ids 0..3 are [UNK], [BOS], [EOS], [PAD]."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]"
    )


def tiny_config(arch: str, vocab_size: int, n_layers: int = 3, d_model: int = 32):
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=d_model, n_layer=n_layers, n_head=4, **ids)
    if arch == "gptj":
        return GPTJConfig(
            vocab_size=vocab_size, n_positions=64, n_embd=d_model, n_layer=n_layers, n_head=4, rotary_dim=4,
            tie_word_embeddings=False, **ids,
        )
    if arch in ("qwen3", "llama"):
        cls = Qwen3Config if arch == "qwen3" else LlamaConfig
        return cls(
            vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
            num_attention_heads=4, num_key_value_heads=2, head_dim=d_model // 4, max_position_embeddings=64,
            tie_word_embeddings=False, **ids,
        )
    if arch == "gemma3":  # post-attention and post-FFN RMSNorms, (1 + w) norm weights, tied embeddings
        return Gemma3TextConfig(
            vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
            num_attention_heads=4, num_key_value_heads=2, head_dim=d_model // 4, max_position_embeddings=64,
            sliding_window=16, **ids,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {TINY_ARCHITECTURES}")


_MODEL_CLASSES = {"gpt2": GPT2LMHeadModel, "gptj": GPTJForCausalLM, "qwen3": Qwen3ForCausalLM, "llama": LlamaForCausalLM,
                  "gemma3": Gemma3ForCausalLM}

# Full-size shapes for GPU benchmarks (random weights; timing only).
FULL_SIZE_CONFIGS = {
    "gptj-6b": lambda: GPTJConfig(vocab_size=50400, n_positions=2048, n_embd=4096, n_layer=28, n_head=16, rotary_dim=64),
    "qwen3-0.6b": lambda: Qwen3Config(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=4096, tie_word_embeddings=True,
    ),
    "qwen3-8b": lambda: Qwen3Config(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=4096, tie_word_embeddings=False,
    ),
}


def build_random_model(
    arch: str, folder: str | Path, n_layers: int = 3, d_model: int = 32, seed: int = 0
) -> Path:
    """Write a tiny random-initialised `arch` model plus word-level tokenizer to `folder`."""
    folder = Path(folder)
    tokenizer = word_level_tokenizer(_TINY_WORDS)
    config = tiny_config(arch, len(tokenizer), n_layers, d_model)
    torch.manual_seed(seed)
    model = _MODEL_CLASSES[arch](config)
    # Random init leaves LayerNorm/RMSNorm at exactly 1/0; perturb them so tests exercise the norm weights.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name or "ln_f" in name:
                # Gemma's post-FFN norm would otherwise rescale every FFN output by the same (1 + 0)
                p.add_((0.3 if arch == "gemma3" else 0.1) * torch.randn_like(p))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
