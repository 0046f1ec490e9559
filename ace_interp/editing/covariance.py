"""Second-moment statistics C^l = E[k kᵀ] of FFN keys over a text corpus, cached on disk.

k is the down-projection input (`blocks.{l}.mlp.hook_post`) at every real token of the corpus (BOS and
padding excluded: BOS is never a subject token, and its attention-sink activations are outliers). As in
MEMIT the moment is uncentred. Files live under

    cache_dir()/stats/<model source>/<corpus id>/layer<l>_n<n_tokens>_len<seq_len>_w<digest>.pt

keyed on content: the corpus id is its name plus a hash of its text, and <digest> hashes the config and
every weight layer l's keys depend on (embeddings and blocks 0..l, `cachefiles.weights_digest`) *as loaded*,
i.e. before the edits in the model's undo stack — so a different model saved over the same folder gets its
own statistics, while a sequence of edits keeps using the statistics of the model it started from (as in
MEMIT, whose statistics are those of the unedited model). Files are written under per-process temporary
names and moved in atomically, under a per-file lock: concurrent first use computes once.

Which corpus: the synthetic world's own training text for its toy models (pass it as `TextCorpus`); for
real models any text the user points at (`TextCorpus.from_files`) or, by default, text *sampled from the
model itself* (`model_sampled_corpus`): it needs no network and follows the model's own distribution of
contexts, which is what the statistics stand for (MEMIT used Wikipedia). Sampling is seeded and the text
is cached next to the statistics.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.keys import capture_input, encode, hf_runner, hooks, run_until
from ace_interp.model.architecture import check_layer
from ace_interp.model.cachefiles import atomic_path, file_lock, weights_digest
from ace_interp.model.loading import cache_dir
from ace_interp.model.state import model_state

log = logging.getLogger(__name__)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


@dataclass(frozen=True)
class TextCorpus:
    """Named texts to collect key statistics over."""

    name: str
    texts: tuple[str, ...]

    def __post_init__(self):
        if not self.texts or not any(t.strip() for t in self.texts):
            raise ValueError(f"corpus {self.name!r} holds no text")

    @functools.cached_property  # the texts are an immutable tuple; hashing a 1.7 MB corpus took 25 ms per look-up
    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for t in self.texts:
            h.update(t.encode())
            h.update(b"\0")
        return h.hexdigest()[:12]

    @property
    def cache_id(self) -> str:
        return f"{_safe(self.name)}-{self.fingerprint}"

    @classmethod
    def from_texts(cls, name: str, texts: Sequence[str]) -> "TextCorpus":
        return cls(name, tuple(str(t) for t in texts))

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike], name: str | None = None) -> "TextCorpus":
        """Local text files; each is split into paragraphs at blank lines."""
        texts: list[str] = []
        for p in paths:
            body = Path(p).read_text(encoding="utf-8", errors="replace")
            texts += [para.strip() for para in re.split(r"\n\s*\n", body) if para.strip()]
        return cls(name or "files-" + "+".join(_safe(Path(p).stem) for p in paths)[:60], tuple(texts))


# FastMEMIT (ACL 2025): 2–10× the key dimension in token samples keeps edit quality, against MEMIT's 100k
# Wikipedia samples (36–40 h per 6–7B model on one A6000); `key_dim_budget` picks a multiple in that range.
KEY_DIM_MULTIPLES = (2.0, 10.0)
DEFAULT_KEY_DIM_MULTIPLE = 4.0


def key_dim_budget(bridge: TransformerBridge, multiple: float = DEFAULT_KEY_DIM_MULTIPLE) -> int:
    """Token samples for key statistics chosen from the key dimension: `multiple` × d_mlp.

        n_tokens = key_dim_budget(bridge)          # 4 × 12,288 = 49,152 for a Qwen3-8B-shaped model
    """
    low, high = KEY_DIM_MULTIPLES
    if not low <= multiple <= high:
        log.warning("key_dim_budget: %.1f× the key dimension is outside FastMEMIT's tested %g–%g×", multiple, low, high)
    return int(round(multiple * bridge.cfg.d_mlp))


def corpus_from_option(bridge: TransformerBridge, option: str, n_tokens: int = 10_000, progress: bool = True) -> TextCorpus:
    """One option for every covariance corpus:

        "sampled"                              text sampled from the model itself (`model_sampled_corpus`)
        "files:a.txt,b.txt"                    local text files (`TextCorpus.from_files`)
        "datasets:wikitext:wikitext-103-raw-v1:train"   a Hugging Face `datasets` corpus (NAME[:CONFIG[:SPLIT]]),
                                                where reachable (needs network or a populated HF cache)
        "default"                              `default_corpus` (the world's own text for toy models, else sampled)
    """
    kind, _, rest = option.partition(":")
    if kind == "sampled":
        return model_sampled_corpus(bridge, n_tokens=n_tokens, progress=progress)
    if kind == "default":
        return default_corpus(bridge, n_tokens=n_tokens, progress=progress)
    if kind == "files" and rest:
        return TextCorpus.from_files([p for p in rest.split(",") if p])
    if kind == "datasets" and rest:
        return datasets_corpus(rest, n_tokens)
    raise ValueError(
        f"unknown covariance corpus option {option!r}: expected 'sampled', 'default', 'files:PATH[,PATH...]' or "
        "'datasets:NAME[:CONFIG[:SPLIT]]'"
    )


def datasets_corpus(spec: str, n_tokens: int, text_field: str = "text") -> TextCorpus:
    """The first texts of a `datasets` corpus, streamed until about 1.5 × n_tokens words:
    spec = "NAME[:CONFIG[:SPLIT]]", e.g. "wikitext:wikitext-103-raw-v1:train"."""
    import datasets  # a dependency, but its corpora need network or a populated HF cache

    name, config, split = (spec.split(":") + ["", ""])[:3]
    try:
        stream = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
    except Exception as e:  # noqa: BLE001 -- offline, unknown name, ...: one clear error
        raise FileNotFoundError(f"datasets corpus {spec!r} is not reachable ({type(e).__name__}: {e}); "
                                "use 'files:...' or 'sampled'") from e
    texts, words = [], 0
    for row in stream:
        text = str(row.get(text_field, "")).strip()
        if text:
            texts.append(text)
            words += len(text.split())
        if words >= 1.5 * n_tokens:
            break
    return TextCorpus.from_texts(f"datasets-{spec}", texts)


_KEY_ROWS = 1024  # keys per float64 outer-product update in `_collect`


def collection_estimate(bridge: TransformerBridge, layers: Sequence[int], n_tokens: int, batch_size: int, seq_len: int) -> str:
    """What collecting key statistics will hold and do, said before it starts: the float64 sums (d_mlp² × 8 B per
    layer), one batch of keys, and the number of forward passes (each stops at the highest layer)."""
    d = bridge.cfg.d_mlp
    sums = len(layers) * d * d * 8
    keys = (batch_size * seq_len * bridge.cfg.dtype.itemsize + _KEY_ROWS * 8) * d * len(layers)
    passes = -(-n_tokens // (batch_size * (seq_len - 1)))
    return (f"key statistics for layers {list(layers)}: {n_tokens:,} tokens ({n_tokens / d:.1f}× the key dimension "
            f"{d:,}), ~{passes} forward passes of {batch_size}×{seq_len} tokens up to layer {max(layers)}; "
            f"memory {sums / 2**30:.2f} GiB of float64 sums + {keys / 2**30:.2f} GiB of keys per batch")


def model_id(bridge: TransformerBridge, up_to_layer: int | None = None) -> str:
    """Source folder name plus a digest of the config, the tokenisation convention and the weights as loaded
    (blocks 0..up_to_layer only, when given: what layer up_to_layer's keys depend on)."""
    source = Path(model_state(bridge).source or type(bridge.original_model).__name__).name
    # the config's `_name_or_path` is where the model was loaded from, not what it is: a second checkout or a clean
    # clone of the same model must find the same statistics
    config = {k: v for k, v in bridge.original_model.config.to_dict().items() if k != "_name_or_path"}
    h = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(weights_digest(bridge, up_to_layer).encode())
    # keys depend on the tokenisation: statistics taken with a BOS in front are not these
    h.update(b"bos" if getattr(bridge.cfg, "default_prepend_bos", True) else b"no-bos")
    return f"{_safe(source)}-{h.hexdigest()[:12]}"


def stats_dir(bridge: TransformerBridge, corpus: TextCorpus) -> Path:
    """The folder of one model source's statistics over `corpus` (files inside are keyed on content)."""
    source = Path(model_state(bridge).source or type(bridge.original_model).__name__).name
    return cache_dir() / "stats" / _safe(source) / corpus.cache_id


def stats_path(
    bridge: TransformerBridge, corpus: TextCorpus, layer: int, n_tokens: int, seq_len: int, site: str = "mlp"
) -> Path:
    """The cache file of C^layer over `corpus` with `n_tokens` samples in windows of `seq_len` tokens (site "attn":
    the statistics of the attention output projection's inputs, a file of its own)."""
    digest = model_id(bridge, up_to_layer=layer).rsplit("-", 1)[1]
    prefix = "" if site == "mlp" else f"{site}_"
    return stats_dir(bridge, corpus) / f"{prefix}layer{layer}_n{n_tokens}_len{seq_len}_w{digest}.pt"


def key_module(runner, layer: int, site: str):
    """The module whose input is the key at `layer`: the FFN's down-projection (site "mlp", W_out) or the
    attention output projection (site "attn", W_O; ACE's release writes it too)."""
    if site == "mlp":
        return runner.down_proj[layer]
    if site == "attn":
        return runner.attention_output(layer)
    raise ValueError(f"unknown key site {site!r}; expected 'mlp' or 'attn'")


def _context_limit(bridge: TransformerBridge, seq_len: int) -> int:
    config = bridge.original_model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return min(seq_len, int(limit)) if limit else seq_len


def model_sampled_corpus(
    bridge: TransformerBridge,
    n_tokens: int = 5_000,
    seq_len: int = 64,
    batch_size: int = 40,
    seed: int = 0,
    progress: bool = True,
) -> TextCorpus:
    """Text sampled from the model itself (temperature 1, full distribution), seeded and cached on disk."""
    seq_len = _context_limit(bridge, seq_len) - 2  # room for BOS and the first sampled token
    path = cache_dir() / "stats" / model_id(bridge) / f"sampled-text-seed{seed}-n{n_tokens}-len{seq_len}.json"
    with file_lock(path):  # concurrent first use: one process samples, the others wait and read
        if not path.exists():
            texts = _sample_texts(bridge, n_tokens, seq_len, batch_size, seed, progress)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(texts))
    return TextCorpus.from_texts(f"sampled-seed{seed}", json.loads(path.read_text()))


def _sample_texts(bridge: TransformerBridge, n_tokens: int, seq_len: int, batch_size: int, seed: int,
                  progress: bool) -> list[str]:
    runner = hf_runner(bridge)
    tok = bridge.tokenizer
    special = set(tok.all_special_ids)
    vocab = [i for i in range(len(tok)) if i not in special]
    n_seqs = -(-n_tokens // seq_len)
    texts: list[str] = []
    gen = torch.Generator().manual_seed(seed)
    device = bridge.cfg.device
    bar = tqdm(total=n_seqs * seq_len, desc="sampling covariance text", unit="tok", disable=not progress)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, n_seqs, batch_size):
            b = min(batch_size, n_seqs - start)
            first = torch.tensor(vocab)[torch.randint(len(vocab), (b, 1), generator=gen)]
            bos = encode(bridge, "")  # the model's BOS convention ([] when it adds none)
            prompt = torch.cat([torch.tensor([bos] * b, dtype=torch.long).reshape(b, len(bos)), first], 1)
            out = runner.model.generate(
                input_ids=prompt.to(device),
                attention_mask=torch.ones_like(prompt).to(device),
                do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                max_new_tokens=seq_len, min_new_tokens=seq_len,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
            out = out.sequences if hasattr(out, "sequences") else out
            texts += [tok.decode([t for t in row.tolist() if t not in special]) for row in out]
            bar.update(b * seq_len)
    bar.close()
    return texts


WORLD_CORPUS_FILE = "corpus_sample.txt"


def default_corpus(bridge: TransformerBridge, n_tokens: int = 10_000, progress: bool = True) -> TextCorpus:
    """The corpus key statistics use unless told otherwise.

    A synthetic-world toy model's world folder (`model_state(bridge).world`) carries a sample of its training corpus
    (`corpus_sample.txt`, one sentence a line, written by `ace_interp.data.world.save_world_assets`): use
    it. Any other model gets text sampled from itself (`model_sampled_corpus`).
    """
    path = world_corpus_path(bridge)
    if path is not None:
        return _world_corpus(path, path.stat().st_mtime_ns, path.stat().st_size)
    return model_sampled_corpus(bridge, n_tokens=n_tokens, progress=progress)


@functools.lru_cache(maxsize=8)
def _world_corpus(path: Path, mtime_ns: int, size: int) -> TextCorpus:
    """The world's corpus file read once per (path, modification time, size): every edit looks it up."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return TextCorpus.from_texts("world-corpus", [l for l in lines if l.strip()])


def world_corpus_path(bridge: TransformerBridge) -> Path | None:
    """The training-corpus sample of a synthetic-world toy model, or None for any other model.

    It sits in the toy's world folder, which `load_model` found from the model's own metadata
    (`model.state`: a toy's `training.json` names its world config).
    """
    world = model_state(bridge).world
    path = world / WORLD_CORPUS_FILE if world is not None else None
    return path if path is not None and path.exists() else None


def _corpus_rows(bridge: TransformerBridge, corpus: TextCorpus, seq_len: int):
    """Token windows of at most seq_len tokens (each starting with the model's BOS convention)."""
    seq_len = _context_limit(bridge, seq_len)
    bos = encode(bridge, "")
    for text in corpus.texts:
        ids = encode(bridge, text)
        body = ids[len(bos):] if bos and ids[: len(bos)] == bos else ids
        step = seq_len - len(bos)
        for i in range(0, len(body), step):
            chunk = body[i : i + step]
            if chunk:
                yield bos + chunk


def _collect(
    bridge: TransformerBridge,
    layers: list[int],
    corpus: TextCorpus,
    n_tokens: int,
    seq_len: int,
    batch_size: int,
    progress: bool,
    keep_keys: bool = False,
    site: str = "mlp",
) -> tuple[dict[int, Tensor], int, dict[int, list[Tensor]]]:
    """Σ k kᵀ (float64) per layer over up to n_tokens corpus tokens; optionally the keys themselves."""
    runner = hf_runner(bridge)
    tok = bridge.tokenizer
    excluded = {t for t in (tok.bos_token_id, tok.pad_token_id) if t is not None}
    modules = {l: key_module(runner, l, site) for l in layers}
    d = bridge.cfg.d_mlp if site == "mlp" else modules[layers[0]].in_features
    device = bridge.cfg.device
    sums = {l: torch.zeros(d, d, dtype=torch.float64, device=device) for l in layers}
    kept: dict[int, list[Tensor]] = {l: [] for l in layers}
    seen = 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    bar = tqdm(total=n_tokens, desc=f"key statistics {corpus.name} layers {layers}", unit="tok", disable=not progress)
    rows = _corpus_rows(bridge, corpus, seq_len)
    done = False
    while not done:
        batch = []
        for row in rows:
            batch.append(row)
            if len(batch) == batch_size:
                break
        if not batch:
            break
        width = max(len(r) for r in batch)
        tokens = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.bool)
        for i, r in enumerate(batch):
            tokens[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        mask &= ~torch.isin(tokens, torch.tensor(sorted(excluded), dtype=torch.long))
        # cap at n_tokens: keep only the first `remaining` real positions (row-major)
        remaining = n_tokens - seen
        flat = mask.flatten()
        idx = flat.nonzero().squeeze(1)[:remaining]
        mask = torch.zeros_like(flat)
        mask[idx] = True
        mask = mask.reshape(len(batch), width).to(device)
        stores: dict[int, list] = {l: [] for l in layers}
        factories = [lambda l=l: capture_input(modules[l], stores[l]) for l in layers]
        with torch.no_grad(), hooks(*factories):
            run_until(runner, tokens.to(device), modules[max(layers)])  # nothing above is needed
        for l in layers:
            keys = stores[l][0][mask]
            # float64 copies of _KEY_ROWS keys at a time: a whole batch (8k tokens × d_mlp 16,384) would be 1 GiB
            for start in range(0, len(keys), _KEY_ROWS):
                k = keys[start : start + _KEY_ROWS].to(torch.float64)
                sums[l].addmm_(k.T, k)  # in place: `+= k.T @ k` held a second d_mlp² float64 temporary (2 GiB at 16,384)
            if keep_keys:
                kept[l].append(keys.to(torch.float32))
        got = int(mask.sum())
        seen += got
        bar.update(got)
        done = seen >= n_tokens
    bar.close()
    if seen == 0:
        raise ValueError(f"corpus {corpus.name!r} yielded no tokens")
    if seen < n_tokens:
        log.warning("corpus %s has only %d tokens (asked for %d)", corpus.name, seen, n_tokens)
    return sums, seen, kept


def second_moments(
    bridge: TransformerBridge,
    layers: Sequence[int],
    corpus: TextCorpus | None = None,
    n_tokens: int = 10_000,
    seq_len: int = 128,
    batch_size: int = 64,
    progress: bool = True,
    use_cache: bool = True,
    site: str = "mlp",
) -> dict[int, Float[Tensor, "d_key d_key"]]:
    """C^l = E[k kᵀ] for each layer (float32), from the disk cache or one pass over the corpus; k is the
    down-projection's input (site "mlp", d_key = d_mlp) or the attention output projection's (site "attn").

    `corpus=None` uses `default_corpus` (the world's corpus for toy models, else model-sampled text).
    """
    layers = sorted({check_layer(bridge, l) for l in layers})
    if corpus is None:
        corpus = default_corpus(bridge, n_tokens=n_tokens, progress=progress)
    paths = {l: stats_path(bridge, corpus, l, n_tokens, seq_len, site) for l in layers}
    if not use_cache:
        log.info(collection_estimate(bridge, layers, n_tokens, batch_size, seq_len))
        sums, seen, _ = _collect(bridge, layers, corpus, n_tokens, seq_len, batch_size, progress, site=site)
        return {l: (sums[l] / seen).to(torch.float32) for l in layers}
    # one lock for the set of layers (by the first file's name): concurrent first use computes once
    with file_lock(paths[layers[0]]):
        missing = [l for l in layers if not paths[l].exists()]
        if missing:
            log.info(collection_estimate(bridge, missing, n_tokens, batch_size, seq_len))
            sums, seen, _ = _collect(bridge, missing, corpus, n_tokens, seq_len, batch_size, progress, site=site)
            for l in missing:
                mom2 = (sums[l] / seen).to(torch.float32)
                with atomic_path(paths[l]) as tmp:
                    torch.save({"mom2": mom2.cpu(), "n_tokens": seen, "corpus": corpus.name}, tmp)
    return {l: _load_moment(paths[l], bridge.cfg.device) for l in layers}


# Statistics already read in this process, by cache file and device. A file's name holds the digest of the
# corpus and of the weights its keys depend on, so the same name means the same contents; a sequence of edits
# looks its statistics up once per edit call and would otherwise re-read the file each time.
_LOADED_MOMENTS: dict[tuple[Path, str], Tensor] = {}


def _load_moment(path: Path, device) -> Float[Tensor, "d_mlp d_mlp"]:
    key = (path, str(device))
    if key not in _LOADED_MOMENTS:
        _LOADED_MOMENTS[key] = torch.load(path, map_location=device, weights_only=True)["mom2"]
    return _LOADED_MOMENTS[key].clone()  # a copy: a caller that writes into its matrix cannot change the next one's


def corpus_keys(
    bridge: TransformerBridge, layer: int, corpus: TextCorpus, n_tokens: int = 1000, seq_len: int = 128,
    site: str = "mlp",
) -> Float[Tensor, "n d_key"]:
    """The keys themselves at `layer` for the first n_tokens corpus tokens (tests and diagnostics)."""
    layer = check_layer(bridge, layer)
    _, _, kept = _collect(bridge, [layer], corpus, n_tokens, seq_len, 8, progress=False, keep_keys=True, site=site)
    return torch.cat(kept[layer])
