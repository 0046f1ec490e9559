"""Compute keys: FFN inner activations at the subject's last token, averaged over context prefixes.

The key of a request at layer l is the input of that layer's down-projection `W_out` (TransformerLens
`blocks.{l}.mlp.hook_post`: post-activation, post-gating) at the last token of the subject, averaged over
the prompt preceded by a few short context prefixes (ROME/MEMIT's `compute_ks`):

    k^l = 1/|C| Σ_{c ∈ C} m^l(c ⊕ prompt(subject))[subject_last]

This module also holds the fast forward path every editor's inner loops use: a plain HuggingFace model
*sharing the bridge's parameter tensors* (no copy), run with ordinary torch hooks. The bridge replaces
the HF submodules with hook-point wrappers, which makes its forward several times slower on CPU;
`tests/editing/test_fast_path.py` checks the fast path against the bridge.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.requests import EditRequest, target_token_ids
from ace_interp.model.architecture import check_layer, ffn_weight, hf_model, hf_parameters
from ace_interp.model.state import model_state

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the fast forward path


class HFRunner:
    """A plain HF model of the bridge's class whose parameters *are* the bridge's tensors.

    Weight writes through `apply_weight_updates` are seen by both immediately. Per layer it exposes the
    decoder block, its attention and MLP modules, and the down-projection (`W_out`) module.
    """

    def __init__(self, bridge: TransformerBridge):
        original = hf_model(bridge)
        with torch.device("meta"):
            model = type(original)(original.config)
        model.load_state_dict(hf_parameters(bridge), assign=True, strict=True)
        model.tie_weights()
        # Non-persistent buffers (rotary inverse frequencies) are not in the state dict: share the bridge's.
        buffers = {n.replace("._original_component", ""): b for n, b in original.named_buffers()}
        for name, buf in list(model.named_buffers()):
            if buf.is_meta:
                if name not in buffers:
                    raise RuntimeError(f"cannot find buffer {name} in the bridge's HF model")
                owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                owner._buffers[name.rsplit(".", 1)[-1]] = buffers[name]
        model.eval()
        self.model = model
        base = model.base_model
        blocks = getattr(base, "layers", None) or getattr(base, "h", None)
        if blocks is None or len(blocks) != bridge.cfg.n_layers:
            raise RuntimeError(f"cannot find the decoder blocks of {type(model).__name__}")
        self.blocks: nn.ModuleList = blocks
        self.down_proj: list[nn.Module] = []
        self.mlp: list[nn.Module] = []
        self.attn: list[nn.Module] = []
        # the attention output projection (GPT-J out_proj, Llama/Qwen3 o_proj) where it is a plain Linear; None
        # otherwise (GPT-2's c_proj is a Conv1D): what ACE's release also writes (`ACEHParams.write_attention`)
        self.o_proj: list[nn.Linear | None] = []
        for layer, block in enumerate(blocks):
            ptr = ffn_weight(bridge, layer, "W_out").data_ptr()
            down = [m for m in block.modules() if getattr(m, "weight", None) is not None and m.weight.data_ptr() == ptr]
            if len(down) != 1:
                raise RuntimeError(f"cannot find layer {layer}'s down-projection in {type(block).__name__}")
            self.down_proj.append(down[0])
            self.mlp.append(block.mlp)
            self.attn.append(getattr(block, "self_attn", None) or block.attn)
            out = next((getattr(self.attn[-1], n) for n in ("o_proj", "out_proj") if hasattr(self.attn[-1], n)), None)
            self.o_proj.append(out if isinstance(out, nn.Linear) else None)
        self._first_param = ffn_weight(bridge, 0, "W_out")

    def attention_output(self, layer: int) -> nn.Linear:
        """Layer `layer`'s attention output projection; a clear error where it is not a Linear."""
        module = self.o_proj[layer]
        if module is None:
            raise ValueError(f"{type(self.model).__name__} layer {layer} has no Linear attention output projection "
                             "(o_proj / out_proj); writing attention is implemented for GPT-J, Llama and Qwen3 models")
        return module

    def is_current(self, bridge: TransformerBridge) -> bool:
        return self._first_param.data_ptr() == ffn_weight(bridge, 0, "W_out").data_ptr()

    def hidden(self, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq d_model"]:
        """The final-norm output (what the unembedding reads)."""
        return self.model.base_model(input_ids=tokens, use_cache=False).last_hidden_state

    def head(self, hidden: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Logits from final-norm outputs (lm_head, then the soft cap some models apply)."""
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return cap * torch.tanh(logits / cap) if cap else logits

    # Families whose base model hands `inputs_embeds` to the first block unchanged (GPT-2 adds position
    # embeddings first, which `_as_inputs_embeds` subtracts). Others run the full forward.
    _RESUMABLE = ("llama", "qwen2", "qwen3", "mistral", "gptj", "gpt2")

    def can_resume(self) -> bool:
        config = self.model.config
        types = getattr(config, "layer_types", None)
        return config.model_type in self._RESUMABLE and (not types or len(set(types)) == 1)

    def block_input(self, tokens: Int[Tensor, "batch seq"], layer: int) -> Float[Tensor, "batch seq d_model"]:
        """The residual entering block `layer` (the forward stops there)."""
        store: list = []

        def grab(module, args, kwargs):
            store.append(args[0] if args else kwargs["hidden_states"])
            raise StopForward

        with torch.no_grad(), hooks(lambda: self.blocks[layer].register_forward_pre_hook(grab, with_kwargs=True)):
            try:
                self.hidden(tokens)
            except StopForward:
                pass
        return store[0]

    def hidden_from(
        self, layer: int, resid: Float[Tensor, "batch seq d_model"], position_ids: Tensor | None = None, **kwargs
    ) -> Float[Tensor, "batch seq d_model"]:
        """Final-norm outputs computed from the residual entering block `layer` (blocks layer.. only).

        The base model is run on `inputs_embeds` with its block list temporarily cut to blocks[layer:]:
        the earlier blocks do not depend on a delta inserted at `layer` or later, so an optimisation loop
        computes them once (`block_input`) instead of every step. `position_ids` and `kwargs` (a KV
        `cache`, an `attention_mask`) go to the base model; blocks keep their own layer index into a cache.
        """
        base = self.model.base_model
        attr = "layers" if hasattr(base, "layers") else "h"
        full = getattr(base, attr)
        embeds = resid
        if self.model.config.model_type == "gpt2":  # GPT-2 adds learned position embeddings to inputs_embeds
            pos = torch.arange(resid.shape[1], device=resid.device) if position_ids is None else position_ids
            embeds = resid - base.wpe(pos)
        setattr(base, attr, nn.ModuleList(list(full)[layer:]))
        try:
            return base(inputs_embeds=embeds, position_ids=position_ids, **kwargs).last_hidden_state
        finally:
            setattr(base, attr, full)

    def logits(self, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq d_vocab"]:
        # Right padding: real tokens never attend to the padding after them, so no attention mask is needed.
        return self.model(input_ids=tokens, use_cache=False).logits


class SuffixForward:
    """The forward pass of a target optimisation, computing only what a delta can change.

    A delta added at layer L at the subject's last token (row j's position `lookup_j`) changes nothing
    at earlier positions (causal attention) and nothing below block L. So, once: the prefix
    tokens[j, :lookup_j] of every row run through the whole model with a KV cache (left-padded to a
    common width), and the suffix tokens[j, lookup_j:] through blocks 0..L−1 on top of it (the residual
    entering block L). Every step then runs only blocks L.. on the suffix, attending to the cached
    prefix keys/values: rows hold `len_j − lookup_j` tokens instead of `len_j`, and context prefixes
    cost nothing per step. `batch` is the suffix batch (lookup 0, target ids shifted), so losses are
    computed on it exactly as on the full batch. `tests/editing/test_fast_path.py` checks its outputs
    and gradients against the full forward.
    """

    def __init__(self, runner: HFRunner, full: "PromptBatch", layer: int):
        from transformers import DynamicCache

        self.runner, self.layer, self._cache_type = runner, layer, DynamicCache
        device = full.tokens.device
        split = full.lookup
        width_p = int(split.max())
        width_s = int((full.lengths - split).max())
        cols_s = torch.arange(width_s, device=device)
        src = (split[:, None] + cols_s).clamp(max=full.tokens.shape[1] - 1)
        real_s = cols_s[None, :] < (full.lengths - split)[:, None]
        cols_p = torch.arange(width_p, device=device)
        src_p = (split[:, None] - width_p + cols_p).clamp(min=0)  # left-aligned prefix: pads first
        real_p = cols_p[None, :] >= (width_p - split)[:, None]
        pad = full.tokens.new_zeros(())
        self.batch = PromptBatch(
            tokens=torch.where(real_s, full.tokens.gather(1, src), pad),
            lengths=full.lengths - split,
            lookup=torch.zeros_like(split),
            owner=full.owner,
            target_ids=torch.where(real_s, full.target_ids.gather(1, src), torch.full_like(src, -100)),
        )
        # positions as in the full rows; suffix padding repeats the row's last position
        self.positions = torch.minimum(split[:, None] + cols_s, (full.lengths - 1)[:, None])
        self.mask = torch.cat([real_p, real_s], 1).long()
        self.prefix_kv: list[tuple[Tensor, Tensor]] = []
        with torch.no_grad():
            if width_p > 0:
                cache = DynamicCache(config=runner.model.config)
                runner.model.base_model(
                    input_ids=torch.where(real_p, full.tokens.gather(1, src_p), pad), attention_mask=real_p.long(),
                    position_ids=(real_p.long().cumsum(1) - 1).clamp(min=0), use_cache=True,
                    **{cache_keyword(runner.model): cache},
                )
                if not cache.layers or getattr(cache.layers[0], "keys", None) is None:
                    raise RuntimeError(
                        f"the KV cache stayed empty after the prefix pass (transformers {transformers_version()}): "
                        "this version's models take the cache under another keyword"
                    )
                # padding rows of the prefix may hold non-finite values; they are masked, keep them finite
                self.prefix_kv = [(l.keys.nan_to_num(), l.values.nan_to_num()) for l in cache.layers]
            store: list = []

            def grab(module, args, kwargs):
                store.append(args[0] if args else kwargs["hidden_states"])
                raise StopForward

            with hooks(lambda: runner.blocks[layer].register_forward_pre_hook(grab, with_kwargs=True)):
                try:
                    runner.model.base_model(input_ids=self.batch.tokens, **self._cache_kwargs())
                except StopForward:
                    pass
            self.resid = store[0]
        self.n_tokens_full, self.n_tokens_suffix = int(full.lengths.sum()), int(self.batch.lengths.sum())

    def _cache_kwargs(self) -> dict:
        kwargs = {"attention_mask": self.mask, "position_ids": self.positions}
        if self.prefix_kv:
            cache = self._cache_type(config=self.runner.model.config)
            for i, (k, v) in enumerate(self.prefix_kv):  # a fresh cache holding the prefix only, each call
                cache.update(k, v, i)
            kwargs.update({cache_keyword(self.runner.model): cache, "use_cache": True})
        return kwargs

    def hidden(self) -> Float[Tensor, "batch suffix d_model"]:
        """Final-norm outputs at the suffix positions (hooks on blocks ≥ layer see suffix positions only)."""
        return self.runner.hidden_from(self.layer, self.resid, **self._cache_kwargs())


def cache_keyword(model: nn.Module) -> str:
    """The keyword under which this transformers version's models take a KV cache: `cache` (5.2x) or
    `past_key_values` (earlier releases, e.g. 5.17)."""
    params = inspect.signature(model.base_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def hf_runner(bridge: TransformerBridge) -> HFRunner:
    """The bridge's fast path, built once per bridge (kept on the bridge object, rebuilt if it moved)."""
    runner = model_state(bridge).hf_runner
    if runner is None or not runner.is_current(bridge):
        runner = model_state(bridge).hf_runner = HFRunner(bridge)
    return runner


class StopForward(Exception):
    """Raised by a hook to end a forward pass once everything needed has been captured."""


def stop_after(module: nn.Module):
    """A forward hook ending the forward pass after `module` ran; returns its handle."""

    def hook(mod, args, output):
        raise StopForward

    return module.register_forward_hook(hook)


def run_until(runner: "HFRunner", tokens: Tensor, module: nn.Module) -> None:
    """Run the forward pass only as far as `module` (hooks registered on earlier modules fire)."""
    with hooks(lambda: stop_after(module)):
        try:
            runner.hidden(tokens)
        except StopForward:
            pass


class IncrementalForward:
    """Forward passes over one token batch while a spread write edits the model layer by layer.

    `read(module, layer)` runs the batch until `module` has run and returns its input or output; on the
    way it keeps the residual entering block `layer`. A write at layer w changes nothing that enters
    block w, so after `written(w)` a kept residual entering block a ≤ w is still exact, and the next
    `read` resumes from it instead of recomputing blocks 0..a−1 (MEMIT's sequential spread over layers
    l_1 < l_2 < … then costs one forward up to l_n instead of Σ l_j). Non-resumable architectures and
    reads below the kept layer run the full forward. `tests/editing/test_fast_path.py` checks the
    resumed reads against full forwards.
    """

    def __init__(self, runner: HFRunner, tokens: Int[Tensor, "batch seq"]):
        self.runner, self.tokens = runner, tokens
        self.kept: tuple[int, Tensor] | None = None  # (block index a, residual entering block a)

    def read(self, module: nn.Module, layer: int, what: str = "output") -> Tensor:
        """`module`'s output (or first input, what="input") for the whole batch; keep the residual
        entering block `layer` (module must run inside or after block `layer`)."""
        runner, store, entering = self.runner, [], []

        def grab_residual(mod, args, kwargs):
            entering.append(args[0] if args else kwargs["hidden_states"])

        capture = capture_input if what == "input" else capture_output
        factories = [lambda: capture(module, store), lambda: stop_after(module)]
        start = self.kept[0] if (self.kept is not None and self.runner.can_resume() and self.kept[0] <= layer) else None
        if start != layer:
            factories.append(lambda: runner.blocks[layer].register_forward_pre_hook(grab_residual, with_kwargs=True))
        with torch.no_grad(), hooks(*factories):
            try:
                if start is None:
                    runner.hidden(self.tokens)
                else:
                    runner.hidden_from(start, self.kept[1])
            except StopForward:
                pass
        if start != layer:
            self.kept = (layer, entering[0])
        return store[0]

    def written(self, layer: int) -> None:
        """Layer `layer` was written: a kept residual entering a later block is stale."""
        if self.kept is not None and self.kept[0] > layer:
            self.kept = None


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters do not require grad inside the block (only the deltas being optimised do)."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@contextlib.contextmanager
def hooks(*handles_factories) -> Iterator[None]:
    handles = [f() for f in handles_factories]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, new):
    return (new, *output[1:]) if isinstance(output, tuple) else new


def add_at_positions(
    module: nn.Module, rows: Tensor, positions: Tensor, delta: Float[Tensor, "n d_model"] | callable
):
    """A forward hook adding delta[j] to module's output at (rows[j], positions[j]); returns its handle.

    `delta` may be a callable returning the tensor (so an optimiser's parameter is read at call time).
    """

    def hook(mod, args, output):
        d = delta() if callable(delta) else delta
        out = _first(output)
        out = out.index_put((rows, positions), d.to(out.dtype), accumulate=True)
        return _replace_first(output, out)

    return module.register_forward_hook(hook)


def add_through_write(
    down_proj: nn.Module, mapping: Float[Tensor, "d_mlp n"], delta: Callable[[], Float[Tensor, "n d_model"]]
):
    """A forward hook on a down-projection adding (k U) δ at every position, k being its input there.

    This is what writing Δ = U δ into W_out does to the layer's output (`solver.write_map`): ≈ δ_i where
    the key is edited key i, and a share of it wherever another token's key overlaps the edited ones.
    """

    def hook(mod, args, output):
        d = delta()
        shift = (args[0].to(mapping.dtype) @ mapping) @ d.to(mapping.dtype)
        return output + shift.to(output.dtype)

    return down_proj.register_forward_hook(hook)


def capture_input(module: nn.Module, store: list):
    """A forward pre-hook appending the module's first input to `store`."""
    return module.register_forward_pre_hook(lambda mod, args: store.append(args[0]))


def capture_output(module: nn.Module, store: list):
    return module.register_forward_hook(lambda mod, args, out: store.append(_first(out)))


# ----------------------------------------------------------------------------- prompts and positions


def encode(bridge: TransformerBridge, text: str) -> list[int]:
    """Token ids as the bridge tokenises a prompt (its BOS convention included)."""
    return bridge.to_tokens(text)[0].tolist()


@dataclass
class PromptBatch:
    """Right-padded token rows, each with a lookup position (the subject's last token), the request it
    belongs to, and optionally target tokens appended (`target_ids[j, p]` is the token position p predicts;
    -100 where there is none)."""

    tokens: Int[Tensor, "batch seq"]
    lengths: Int[Tensor, " batch"]
    lookup: Int[Tensor, " batch"]
    owner: Int[Tensor, " batch"]
    target_ids: Int[Tensor, "batch seq"]

    @property
    def n(self) -> int:
        return len(self.tokens)

    @property
    def rows(self) -> Int[Tensor, " batch"]:
        return torch.arange(self.n, device=self.tokens.device)

    def mean_per_owner(self, values: Float[Tensor, "batch ..."], n_owners: int) -> Tensor:
        summed = torch.zeros(n_owners, *values.shape[1:], dtype=values.dtype, device=values.device)
        summed = summed.index_add(0, self.owner, values)
        counts = torch.bincount(self.owner, minlength=n_owners).to(values.dtype)
        return summed / counts.reshape(-1, *([1] * (values.ndim - 1)))

    def per_owner(self, values: Float[Tensor, "batch ..."], n_owners: int) -> Float[Tensor, "n_owners c ..."]:
        """`values` regrouped as [owner, that owner's rows in batch order, ...]; every owner needs the same
        number of rows (as `build_batch` gives: one per context)."""
        counts = torch.bincount(self.owner, minlength=n_owners)
        if not bool((counts == counts[0]).all()):
            raise ValueError(f"owners have different numbers of rows: {counts.tolist()}")
        order = torch.sort(self.owner, stable=True).indices
        return values[order].reshape(n_owners, int(counts[0]), *values.shape[1:])

    def keys_per_owner(
        self, values: Float[Tensor, "batch d"], n_owners: int, per_context: bool, weights: Sequence[float] | None = None
    ) -> Tensor:
        """[n, d] keys averaged over each owner's contexts, or [n, c, d] kept apart (`solver.write_map`).

        `weights` (one per context, in `build_batch`'s context order; `CovarianceHParams.key_weights`) replaces the
        uniform mean by a weighted one: MEMIT's mean within context groups, then across them."""
        if per_context:
            return self.per_owner(values, n_owners)
        if weights is None:
            return self.mean_per_owner(values, n_owners)
        w = torch.tensor(list(weights), dtype=values.dtype, device=values.device)
        return torch.einsum("ncd,c->nd", self.per_owner(values, n_owners), w)


FACT_TOKENS = ("subject_last", "last")


def subject_prompt_ids(
    bridge: TransformerBridge, context: str, request: EditRequest, fact_token: str = "subject_last"
) -> tuple[list[int], int]:
    """Token ids of `context + prompt(subject)` and the index of the fact's lookup token (ROME's `fact_token`).

    "subject_last": the length of the tokenised text up to and including the subject, minus one. A BPE merge
    across the subject's end would shift it; that is the reference behaviour. "last": the prompt's last token
    (ROME `find_fact_lookup_idx` / `get_module_input_output_at_word` with `fact_token="last"`: index −1 of the
    prompt; for a multi-token target the reference's −1 falls on the last target-prefix token of its rewriting
    rows, ours stays on the prompt's last token, where the key is read).
    """
    if fact_token not in FACT_TOKENS:
        raise ValueError(f"unknown fact_token {fact_token!r}; expected one of {FACT_TOKENS}")
    ids = encode(bridge, context + request.text)
    if fact_token == "last":
        return ids, len(ids) - 1
    prefix = encode(bridge, context + request.prefix_through_subject)
    return ids, min(len(prefix), len(ids)) - 1


def build_batch(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    contexts: Sequence[str] = ("",),
    with_target: bool = False,
    owners: Sequence[int] | None = None,
    fact_token: str = "subject_last",
) -> PromptBatch:
    """One row per (request, context): `context + prompt(subject)` [+ target_new tokens but the last], its
    lookup position the `fact_token` (`subject_prompt_ids`).

    `owners[i]` says which edit request row i's request belongs to (default: its own index).
    """
    owners = list(range(len(requests))) if owners is None else list(owners)
    rows_ids, lookup, owner, targets = [], [], [], []
    for r, o in zip(requests, owners):
        for c in contexts:
            ids, pos = subject_prompt_ids(bridge, c, r, fact_token)
            tgt = [-100] * len(ids)
            if with_target:
                t = target_token_ids(bridge, r.target_new)
                tgt = [-100] * (len(ids) - 1) + t  # position len(ids)-1+j predicts target token j
                ids = ids + t[:-1]
            rows_ids.append(ids)
            targets.append(tgt)
            lookup.append(pos)
            owner.append(o)
    return _pad(bridge, rows_ids, targets, lookup, owner)


def _pad(bridge, rows_ids, targets, lookup, owner) -> PromptBatch:
    device = bridge.cfg.device
    width = max(len(x) for x in rows_ids)
    pad = bridge.tokenizer.pad_token_id
    pad = 0 if pad is None else pad
    tokens = torch.full((len(rows_ids), width), pad, dtype=torch.long)
    target_ids = torch.full((len(rows_ids), width), -100, dtype=torch.long)
    for j, (ids, tgt) in enumerate(zip(rows_ids, targets)):
        tokens[j, : len(ids)] = torch.tensor(ids)
        target_ids[j, : len(tgt)] = torch.tensor(tgt)
    return PromptBatch(
        tokens=tokens.to(device),
        lengths=torch.tensor([len(x) for x in rows_ids], device=device),
        lookup=torch.tensor(lookup, device=device),
        owner=torch.tensor(owner, device=device),
        target_ids=target_ids.to(device),
    )


def concat_batches(bridge: TransformerBridge, *batches: PromptBatch) -> PromptBatch:
    """Stack batches row-wise (re-padding to the widest)."""
    rows, targets, lookup, owner = [], [], [], []
    for b in batches:
        for j in range(b.n):
            n = int(b.lengths[j])
            rows.append(b.tokens[j, :n].tolist())
            targets.append(b.target_ids[j, :n].tolist())
            lookup.append(int(b.lookup[j]))
            owner.append(int(b.owner[j]))
    return _pad(bridge, rows, targets, lookup, owner)


# ----------------------------------------------------------------------------- context prefixes


def context_templates(
    bridge: TransformerBridge, n: int = 5, length: int = 10, seed: int = 0
) -> list[str]:
    """Context prefixes: "" plus `n` short texts sampled from the model itself, each ending in ". ".

    As in ROME/MEMIT (5 samples of 10 tokens, top-k 5, started from "The", "Therefore", "Because", "I",
    "You"), but seeded so an edit is reproducible. Starts that the vocabulary cannot spell (word-level toy
    tokenizers) are replaced by a vocabulary word drawn with the same seed. Computed once per bridge.
    """
    key = (n, length, seed)
    cache = model_state(bridge).context_templates
    if key in cache:
        return list(cache[key])
    templates = [""]
    if n > 0:
        runner = hf_runner(bridge)
        tok = bridge.tokenizer
        gen = torch.Generator().manual_seed(seed)
        starts = ["The", "Therefore", "Because", "I", "You"]
        special = set(tok.all_special_ids)
        vocab_words = [i for i in range(len(tok)) if i not in special]
        for j in range(n):
            ids = encode(bridge, starts[j % len(starts)])
            if not ids or (tok.unk_token_id is not None and tok.unk_token_id in ids):
                word = vocab_words[int(torch.randint(len(vocab_words), (1,), generator=gen))]
                ids = encode(bridge, tok.decode([word]))
            with torch.no_grad():
                for _ in range(length):
                    logits = runner.logits(torch.tensor([ids], device=bridge.cfg.device))[0, -1].float().cpu()
                    logits[list(special)] = -float("inf")
                    top = logits.topk(5)
                    choice = torch.multinomial(top.values.softmax(-1), 1, generator=gen)
                    ids.append(int(top.indices[choice]))
            bos = tok.bos_token_id
            body = ids[:] if ids[0] != bos else ids[1:]
            text = tok.decode(body, skip_special_tokens=True).replace("{", "(").replace("}", ")").strip()
            templates.append(text + ". ")
    cache[key] = list(templates)
    log.debug("context templates: %s", templates)
    return templates


# ----------------------------------------------------------------------------- keys


def n_owners(requests: Sequence[EditRequest], owners: Sequence[int] | None) -> int:
    """How many rows a per-owner result has: one per request, or one per distinct owner index 0..m−1."""
    if owners is None:
        return len(requests)
    owners = list(owners)
    if len(owners) != len(requests):
        raise ValueError(f"{len(owners)} owners for {len(requests)} requests")
    if sorted(set(owners)) != list(range(len(set(owners)))):
        raise ValueError(f"owners must number 0..m−1 without gaps, got {sorted(set(owners))}")
    return len(set(owners))


def compute_keys(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    layers: Sequence[int],
    contexts: Sequence[str] = ("",),
    per_context: bool = False,
    owners: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    fact_token: str = "subject_last",
) -> dict[int, Float[Tensor, "n_requests d_mlp"] | Float[Tensor, "n_requests n_contexts d_mlp"]]:
    """k^l per request: the down-projection input at the subject's last token (or the prompt's last token,
    `fact_token="last"`), averaged over contexts
    ([n, d_mlp]; weighted by `weights`, one per context, where given), or with `per_context` one per context
    ([n, c, d_mlp], in `contexts` order).

    `owners[i]` groups requests: the keys of all requests with the same owner are averaged into its row
    (ACE's implicit subjects: one key per edit, averaged over the noun phrases that reach its subject)."""
    layers = [check_layer(bridge, l) for l in layers]
    n = n_owners(requests, owners)
    runner = hf_runner(bridge)
    batch = build_batch(bridge, requests, contexts, owners=owners, fact_token=fact_token)
    stores: dict[int, list] = {l: [] for l in layers}
    factories = [lambda l=l: capture_input(runner.down_proj[l], stores[l]) for l in layers]
    with torch.no_grad(), hooks(*factories):
        run_until(runner, batch.tokens, runner.down_proj[max(layers)])
    return {l: batch.keys_per_owner(stores[l][0][batch.rows, batch.lookup], n, per_context, weights) for l in layers}


def outputs_at_subject(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    layer: int,
    site: str,
    contexts: Sequence[str] = ("",),
    owners: Sequence[int] | None = None,
    fact_token: str = "subject_last",
) -> Float[Tensor, "n_requests d_model"]:
    """The output of `site` ("resid": the block, "mlp", "attn") of `layer` at the subject's last token (the
    `fact_token`),
    averaged over contexts (MEMIT/PMET's `cur_zs` use the bare prompt: contexts=("",)) and over the requests
    of one owner (`compute_keys`)."""
    layer = check_layer(bridge, layer)
    runner = hf_runner(bridge)
    module = {"resid": runner.blocks, "mlp": runner.mlp, "attn": runner.attn}[site][layer]
    n = n_owners(requests, owners)
    batch = build_batch(bridge, requests, contexts, owners=owners, fact_token=fact_token)
    store: list = []
    with torch.no_grad(), hooks(lambda: capture_output(module, store)):
        run_until(runner, batch.tokens, module)
    return batch.mean_per_owner(store[0][batch.rows, batch.lookup], n)


def sampled_contexts(bridge: TransformerBridge, target) -> list[str]:
    """"" plus the context prefixes `target` (a `targets.TargetHParams`) asks for: `context_lengths` (length, count) pairs, e.g. ROME's
    ((5, 10), (10, 10)), each sampled with its own seed, or `n_context` prefixes of `context_length` tokens."""
    pairs = target.context_lengths if target.context_lengths is not None else ((target.context_length, target.n_context),)
    return [""] + [c for j, (length, n) in enumerate(pairs) for c in context_templates(bridge, n, length, target.seed + j)[1:]]
