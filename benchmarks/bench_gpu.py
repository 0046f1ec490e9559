"""GPU timing on full-size random models (GPT-J-6B and Qwen3-8B shapes, bf16): seconds per attributed
prompt (exact top-100 value neurons), seconds per PMET edit, peak GPU memory. Timing only: random weights
carry no knowledge, so no quality is claimed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ace_interp.attribution.value import top_value_neurons
from ace_interp.editing import EditRequest, edit
from ace_interp.model import load_model
from ace_interp.model.random_init import FULL_SIZE_CONFIGS, word_level_tokenizer
from benchmarks.common import format_table, machine_description, measure


def build_full_size(shape: str, folder: Path) -> Path:
    from transformers import AutoModelForCausalLM

    config = FULL_SIZE_CONFIGS[shape]()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.save_pretrained(folder)
    words = [f"w{i}" for i in range(config.vocab_size - 4)]
    word_level_tokenizer(words).save_pretrained(folder)
    return folder


def run(shapes=("gptj-6b", "qwen3-8b")) -> None:
    rows = []
    for shape in shapes:
        folder = build_full_size(shape, Path(tempfile.mkdtemp()) / shape)
        bridge = load_model(folder, device="cuda", dtype=torch.bfloat16)
        prompt = " ".join(f"w{i}" for i in range(12))
        rows.append(measure(f"{shape}: exact top-100 value neurons, 1 prompt", lambda: top_value_neurons(bridge, prompt, 5, k=100), "cuda"))
        request = EditRequest("w1 w2 {} w4 w5", "w3", "w7", "w8")
        rows.append(measure(f"{shape}: PMET edit (cold statistics)", lambda: edit(bridge, [request], "pmet").undo(), "cuda"))
        rows.append(measure(f"{shape}: PMET edit (warm statistics)", lambda: edit(bridge, [request], "pmet").undo(), "cuda"))
        del bridge
        torch.cuda.empty_cache()
    print(f"\n## GPU ({machine_description()})\n")
    print(format_table(rows))
