"""Neuron ablations through TransformerLens hook points, and the ablation experiments of issue 4.

`ablate_neurons(bridge, {layer: [neurons]})` replaces the chosen FFN coefficients m^l_k
(`blocks.{l}.mlp.hook_post`, post-activation / post-gating) by 0 or by a mean value during any forward
pass or generation inside the `with` block; no weight is touched. The hooks sit on the bridge's
components, so they also act when the wrapped HF model is called directly (`bridge.original_model(...)`,
`generate`).

Experiments (each returns pandas DataFrames):
  (a) `value_ablation_experiment`: the top fraction of value neurons of each relation vs random neuron sets
      of the same size (several seeds) → accuracy drop per relation.
  (b) `query_knockout_experiment`: knock out the top-N query neurons of one layer → accuracy and the number
      of activated value neurons (value score > threshold) in the following layers, before vs after.
  (c) `sparse_key_ablation`: per prompt, ablate the top-K value neurons whose sub-value projects onto the
      answer in vocabulary space ("interpretable") vs the top-K by value score alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.utilities import get_act_name

from ace_interp.attribution.query import query_scores
from ace_interp.attribution.value import (
    DEFAULT_MEMORY_BUDGET,
    target_token_ids,
    top_mean_value_neurons,
    top_value_neurons,
    value_neurons_above,
)
from ace_interp.model.architecture import resolve_layers
from ace_interp.model import (
    check_layer,
    model_spec,
    neuron_activations,
    resolve_positions,
    residual_sub_values_of,
    tokenize_prompts,
)
from ace_interp.model.architecture import final_norm_module, unembed_module

log = logging.getLogger(__name__)

AblationMode = Literal["zero", "mean"]
NeuronSet = Mapping[int, Sequence[int]]


# ----------------------------------------------------------------------------- hooks


def _check_neuron_set(bridge: TransformerBridge, neurons: NeuronSet) -> dict[int, Tensor]:
    if not isinstance(neurons, Mapping):
        raise TypeError("neurons must be a mapping {layer: [neuron ids]}")
    d_mlp = bridge.cfg.d_mlp
    out: dict[int, Tensor] = {}
    for layer, ids in neurons.items():
        l = check_layer(bridge, int(layer))
        idx = torch.as_tensor(list(ids) if not isinstance(ids, Tensor) else ids, dtype=torch.long).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= d_mlp):
            raise IndexError(f"layer {layer}: neuron ids must lie in 0..{d_mlp - 1}, got {idx.tolist()}")
        out[l] = torch.cat([out[l], idx]).unique() if l in out else idx.unique()
    return out


def _mean_for_layer(bridge: TransformerBridge, mean_values, layer: int) -> Tensor:
    if mean_values is None:
        raise ValueError("mode='mean' needs mean_values (e.g. from mean_activations(bridge, prompts))")
    if isinstance(mean_values, Mapping):
        if layer not in mean_values:
            raise KeyError(f"mean_values has no entry for layer {layer}")
        values = torch.as_tensor(mean_values[layer])
    else:
        values = torch.as_tensor(mean_values)
        if values.shape != (bridge.cfg.n_layers, bridge.cfg.d_mlp):
            raise ValueError(
                f"mean_values must be [n_layers, d_mlp] = {(bridge.cfg.n_layers, bridge.cfg.d_mlp)} or a "
                f"{{layer: [d_mlp]}} mapping, got shape {tuple(values.shape)}"
            )
        values = values[layer]
    if values.shape != (bridge.cfg.d_mlp,):
        raise ValueError(f"mean values for layer {layer} must have shape ({bridge.cfg.d_mlp},)")
    return values


def ablation_hooks(
    bridge: TransformerBridge,
    neurons: NeuronSet,
    mode: AblationMode = "zero",
    mean_values: Mapping[int, Tensor] | Tensor | None = None,
    positions: Sequence[int] | None = None,
) -> list[tuple[str, object]]:
    """The (hook name, function) pairs that ablate `neurons` at `blocks.{l}.mlp.hook_post`, for use with
    `bridge.hooks(fwd_hooks=...)` / `bridge.run_with_hooks`. `positions` (absolute token indices) limits
    the ablation to those positions; None ablates every position."""
    if mode not in ("zero", "mean"):
        raise ValueError(f"unknown ablation mode {mode!r}; expected 'zero' or 'mean'")
    checked = _check_neuron_set(bridge, neurons)
    hooks = []
    for layer, idx in checked.items():
        if len(idx) == 0:
            continue
        replacement = None if mode == "zero" else _mean_for_layer(bridge, mean_values, layer)[idx]

        def hook(act: Tensor, hook=None, idx=idx, replacement=replacement) -> Tensor:
            out = act.clone()
            fill = 0.0 if replacement is None else replacement.to(act)
            cols = idx.to(act.device)
            if positions is None:
                out[..., cols] = fill
            else:  # only the chosen token positions (those present in this forward)
                pos = torch.as_tensor(list(positions), device=act.device)
                pos = pos[pos < act.shape[1]]
                out[:, pos[:, None], cols[None, :]] = fill
            return out

        hooks.append((get_act_name("post", layer), hook))
    return hooks


@contextmanager
def ablate_neurons(
    bridge: TransformerBridge,
    neurons: NeuronSet,
    mode: AblationMode = "zero",
    mean_values: Mapping[int, Tensor] | Tensor | None = None,
    positions: Sequence[int] | None = None,
) -> Iterator[TransformerBridge]:
    """Within the block, every forward pass sees the chosen neurons ablated.

        import ace_interp as ai
        model = ai.load_model("toy-gptj")
        with ai.ablate(model, {4: [17, 210], 5: [3]}):          # {layer: [neuron ids]}
            logits = model("anna kovac 's country is")         # [batch=1, seq, d_vocab], neurons zeroed

    Every forward pass (bridge call, `run_with_cache`, the wrapped HF model, generation) sees m^l_k
    (`blocks.{l}.mlp.hook_post`, [batch, seq, d_mlp]) replaced by 0 (`mode="zero"`) or by `mean_values[l][k]`
    (`mode="mean"`; `mean_values` [n_layers, d_mlp]) for the chosen {layer: [neuron ids]}. The hooks are removed on exit, also after an exception.

    `positions` index the token axis of each forward's own activations: right for full-sequence forwards
    (and cache-free generation); with a KV cache each step sees only its new token(s), so leave it None."""
    hooks = ablation_hooks(bridge, neurons, mode, mean_values, positions)
    with bridge.hooks(fwd_hooks=hooks):
        yield bridge


def mean_activations(
    bridge: TransformerBridge, prompts: str | Sequence[str], layers: Sequence[int] | None = None
) -> Float[Tensor, "n_layers d_mlp"]:
    """Mean of m^l over every real (non-padding) token of `prompts`, for mean ablation. Rows are all
    layers (zeros for layers not in `layers`)."""
    layers = resolve_layers(bridge, layers)
    tokens, lengths = tokenize_prompts(bridge, prompts)
    names = {get_act_name("post", l) for l in layers}
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    mask = (torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None]).to(torch.float32)
    out = torch.zeros(bridge.cfg.n_layers, bridge.cfg.d_mlp)
    for l in layers:
        act = cache[get_act_name("post", l)].float()
        out[l] = (act * mask[..., None]).sum((0, 1)) / mask.sum()
    return out


# ----------------------------------------------------------------------------- accuracy


def answer_log_probs(
    bridge: TransformerBridge,
    prompts: str | Sequence[str],
    targets: str | int | Sequence[str | int],
    positions: int | Sequence[int] = -1,
) -> pd.DataFrame:
    """One batched forward (honouring any active hooks): per prompt the target's log-probability at the
    chosen position, the greedy token, and whether it is the target (columns log_prob, predicted, correct)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    target_ids = target_token_ids(bridge, targets, len(prompts))
    tokens, lengths = tokenize_prompts(bridge, prompts)
    pos = resolve_positions(lengths, positions)
    with torch.no_grad():
        logits = bridge(tokens)
    rows = torch.arange(len(prompts), device=pos.device)
    lp = logits[rows, pos].float().log_softmax(-1)
    predicted = lp.argmax(-1)
    return pd.DataFrame(
        {
            "log_prob": lp[rows, target_ids].tolist(),
            "predicted": predicted.tolist(),
            "correct": (predicted == target_ids).tolist(),
        }
    )


def _neuron_set(pairs) -> dict[int, list[int]]:
    """{layer: [neuron ids]} from (layer, neuron) pairs, in their order."""
    out: dict[int, list[int]] = {}
    for l, n in pairs:
        out.setdefault(int(l), []).append(int(n))
    return out


def _group(flat_idx: Tensor, d_mlp: int) -> dict[int, list[int]]:
    """{layer: [neuron ids]} from flat indices layer·d_mlp + neuron."""
    return _neuron_set((i // d_mlp, i % d_mlp) for i in flat_idx.tolist())


def _frame_neuron_set(frame: pd.DataFrame) -> dict[int, list[int]]:
    """{layer: [neuron ids]} of a frame with layer and neuron columns."""
    return _neuron_set(zip(frame.layer.tolist(), frame.neuron.tolist()))


# ----------------------------------------------------------------------------- (a) value neurons vs random


def _ablated_answers(bridge, prompts, targets, neuron_sets, mode, mean_values, positions) -> pd.DataFrame:
    """`answer_log_probs` with `neuron_sets` ablated: one set for all prompts, or one set per prompt."""
    if len(neuron_sets) == 1:
        with ablate_neurons(bridge, neuron_sets[0], mode, mean_values):
            return answer_log_probs(bridge, prompts, targets, positions)
    frames = []
    for j, (prompt, target, neurons) in enumerate(zip(prompts, targets, neuron_sets, strict=True)):
        with ablate_neurons(bridge, neurons, mode, mean_values):
            frames.append(answer_log_probs(bridge, [prompt], [target], _one(positions, j)))
    return pd.concat(frames, ignore_index=True)


def _one(positions: int | Sequence[int], j: int) -> int | list[int]:
    """The position argument for prompt `j` alone."""
    return positions if isinstance(positions, int) else [positions[j]]


def value_ablation_outcomes(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    targets: Sequence[str | int],
    relations: Sequence[str] | None = None,
    fraction: float = 0.01,
    seeds: Sequence[int] = (0, 1, 2),
    mode: AblationMode = "zero",
    mean_values: Tensor | None = None,
    positions: int | Sequence[int] = -1,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    scope: Literal["relation", "prompt"] = "relation",
) -> pd.DataFrame:
    """The per-prompt outcomes behind `value_ablation_experiment`, for paired tests of top against random.

        import ace_interp as ai
        from ace_interp.ablation import value_ablation_outcomes
        model = ai.load_model("toy-gptj")
        rows = value_ablation_outcomes(model, ["anna kovac 's country is"], [" france"], fraction=0.01, seeds=[0])
        rows.pivot(index="prompt", columns="condition", values="correct")   # paired 0/1 outcomes per prompt

    One row per prompt and condition (baseline, top, each random seed): relation, condition, seed, n_neurons,
    prompt (index into `prompts`), log_prob (of the target at its position), predicted (greedy token id),
    correct. Same sets and arguments as `value_ablation_experiment`."""
    if scope not in ("relation", "prompt"):
        raise ValueError(f"unknown scope {scope!r}; expected 'relation' or 'prompt'")
    prompts, targets = list(prompts), list(targets)
    relations = ["all"] * len(prompts) if relations is None else list(relations)
    if not (len(prompts) == len(targets) == len(relations)):
        raise ValueError("prompts, targets and relations must have the same length")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_total = bridge.cfg.n_layers * bridge.cfg.d_mlp
    count = max(1, round(fraction * n_total))
    frames = []
    for relation in dict.fromkeys(relations):
        ids = [i for i, r in enumerate(relations) if r == relation]
        p = [prompts[i] for i in ids]
        t = [targets[i] for i in ids]
        pos = positions if isinstance(positions, int) else [positions[i] for i in ids]
        if scope == "relation":
            top_sets = [_frame_neuron_set(top_mean_value_neurons(bridge, p, t, count, pos, memory_budget))]
        else:
            top_sets = [_frame_neuron_set(top_value_neurons(bridge, [q], [w], count, _one(pos, j), memory_budget=memory_budget))
                        for j, (q, w) in enumerate(zip(p, t))]
        sets = [("baseline", None, 0, [{}]), ("top", None, count, top_sets)]
        for seed in seeds:
            g = torch.Generator().manual_seed(int(seed))
            sets.append(("random", seed, count, [_group(torch.randperm(n_total, generator=g)[:count], bridge.cfg.d_mlp)]))
        for condition, seed, n_neurons, neuron_sets in sets:
            res = _ablated_answers(bridge, p, t, neuron_sets, mode, mean_values, pos)
            frames.append(res.assign(relation=relation, condition=condition, seed=seed, n_neurons=n_neurons, prompt=ids))
    columns = ["relation", "condition", "seed", "n_neurons", "prompt", "log_prob", "predicted", "correct"]
    return pd.concat(frames, ignore_index=True)[columns]


def value_ablation_experiment(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    targets: Sequence[str | int],
    relations: Sequence[str] | None = None,
    *,
    outcomes: pd.DataFrame | None = None,
    **options,
) -> pd.DataFrame:
    """Per relation: ablate its top `fraction` of all FFN neurons by mean value score (frozen norm,
    averaged over the relation's prompts; exact, `top_mean_value_neurons`) vs `len(seeds)` random sets of
    the same size drawn uniformly from all neurons. With `scope="prompt"` each prompt is run with its own
    top `fraction` instead (`top_value_neurons` of that prompt alone; the random sets are the same).

        import ace_interp as ai
        from ace_interp.ablation import value_ablation_experiment
        model = ai.load_model("toy-gptj")
        value_ablation_experiment(model, ["anna kovac 's country is"], [" france"], fraction=0.01, seeds=[0, 1])

    `options` are `value_ablation_outcomes`' (fraction, seeds, mode, mean_values, positions, memory_budget,
    scope). Rows: relation, condition (baseline/top/random), seed, n_neurons, accuracy, mean_log_prob,
    accuracy_drop (baseline − condition): the means of `value_ablation_outcomes`' per-prompt rows; `outcomes`
    aggregates such rows from a run already made instead of running one."""
    if outcomes is None:
        outcomes = value_ablation_outcomes(bridge, prompts, targets, relations, **options)
    frame = (
        outcomes.groupby(["relation", "condition", "seed", "n_neurons"], sort=False, dropna=False)
        .agg(accuracy=("correct", "mean"), mean_log_prob=("log_prob", "mean"))
        .reset_index()
    )
    frame["accuracy"] = frame["accuracy"].astype(float)
    baseline = frame[frame.condition == "baseline"].set_index("relation")["accuracy"]
    frame["accuracy_drop"] = frame["relation"].map(baseline) - frame["accuracy"]
    return frame


# ----------------------------------------------------------------------------- (b) query knockout


@dataclass
class QueryKnockout:
    """Result of `query_knockout_experiment`: the ablated neurons of `layer`, per-prompt numbers, summary."""

    layer: int
    neurons: list[int]
    per_prompt: pd.DataFrame  # prompt, correct/log_prob/n_active before and after
    summary: dict[str, float]


def query_knockout_experiment(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    targets: Sequence[str | int],
    layer: int,
    n_neurons: int = 10,
    threshold: float = 0.1,
    n_value_neurons: int = 100,
    aggregate: str = "positive",
    mode: AblationMode = "zero",
    mean_values: Tensor | None = None,
    positions: int | Sequence[int] = -1,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    neurons: Sequence[int] | None = None,
) -> QueryKnockout:
    """Knock out the `n_neurons` neurons of `layer` with the highest query score (`aggregate`, averaged
    over the prompts, against each prompt's top `n_value_neurons` value neurons) and compare, before vs
    after: greedy accuracy, target log-prob, and the number of *activated value neurons* in the layers
    after `layer` (frozen-norm value score > `threshold`, counted exactly via `value_neurons_above`).

    `neurons` knocks out exactly these neurons of `layer` instead (e.g. a random control set of the same
    size); then no query scores are computed and `n_neurons`, `n_value_neurons`, `aggregate` are unused."""
    prompts, targets = list(prompts), list(targets)
    layer = check_layer(bridge, layer)
    later = list(range(layer + 1, bridge.cfg.n_layers))
    if neurons is None:
        q = query_scores(bridge, prompts, targets, n_value_neurons, positions, memory_budget=memory_budget)
        chosen = q.scores(aggregate)[:, layer].mean(0).topk(min(n_neurons, bridge.cfg.d_mlp)).indices.tolist()
    else:
        chosen = [int(k) for k in neurons]
        bad = [k for k in chosen if not 0 <= k < bridge.cfg.d_mlp]
        if bad:
            raise ValueError(f"neurons {bad} are not in layer {layer}'s 0..{bridge.cfg.d_mlp - 1}")

    def measure() -> pd.DataFrame:
        res = answer_log_probs(bridge, prompts, targets, positions)
        if later:
            acts = neuron_activations(bridge, prompts, positions, later)
            active = value_neurons_above(bridge, prompts, targets, threshold, positions, later, memory_budget, acts)
            counts = active.groupby("prompt").size().reindex(range(len(prompts)), fill_value=0).to_numpy()
        else:
            counts = [0] * len(prompts)
        res["n_active"] = counts
        return res

    before = measure()
    with ablate_neurons(bridge, {layer: chosen}, mode, mean_values):
        after = measure()
    per_prompt = pd.DataFrame(
        {
            "prompt": range(len(prompts)),
            "correct_before": before["correct"], "correct_after": after["correct"],
            "log_prob_before": before["log_prob"], "log_prob_after": after["log_prob"],
            "n_active_before": before["n_active"], "n_active_after": after["n_active"],
        }
    )
    summary = {
        "accuracy_before": float(before["correct"].mean()),
        "accuracy_after": float(after["correct"].mean()),
        "accuracy_drop": float(before["correct"].mean() - after["correct"].mean()),
        "mean_log_prob_before": float(before["log_prob"].mean()),
        "mean_log_prob_after": float(after["log_prob"].mean()),
        "mean_active_before": float(before["n_active"].mean()),
        "mean_active_after": float(after["n_active"].mean()),
    }
    return QueryKnockout(layer, chosen, per_prompt, summary)


# ----------------------------------------------------------------------------- (c) sparse key neurons


def vocabulary_rank(
    bridge: TransformerBridge, neurons: Sequence[tuple[int, int]], target: int, signs: Sequence[float] | None = None
) -> list[int]:
    """Rank (1 = top) of `target` among the vocabulary when each neuron's sub-value, signed by its
    coefficient's sign, is read through the final norm's weight and the unembedding:
    W_U (γ ⊙ c(sign · fc2_k)) (no norm scale: a positive factor does not change ranks)."""
    norm = final_norm_module(bridge)
    gamma = norm.weight + 1.0 if getattr(bridge.cfg, "rmsnorm_uses_offset", False) else norm.weight
    W_U = unembed_module(bridge).weight
    centre = model_spec(bridge).normalization == "layernorm"
    if not neurons:
        return []
    with torch.no_grad():
        V = residual_sub_values_of(bridge, neurons)
        if signs is not None:
            V = V * torch.as_tensor(signs, dtype=V.dtype, device=V.device)[:, None]
        if centre:
            V = V - V.mean(-1, keepdim=True)
        ranks = []
        for start in range(0, len(V), 256):  # [256 × vocab] logits at a time
            logits = (gamma * V[start : start + 256]) @ W_U.T
            ranks += ((logits > logits[:, target : target + 1]).sum(-1) + 1).tolist()
    return ranks


def sparse_key_ablation(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    targets: Sequence[str | int],
    k: int = 10,
    vocab_top: int = 10,
    n_candidates: int = 300,
    relations: Sequence[str] | None = None,
    mode: AblationMode = "zero",
    mean_values: Tensor | None = None,
    positions: int | Sequence[int] = -1,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> pd.DataFrame:
    """Per prompt: among its top `n_candidates` value neurons, the *interpretable* ones are those whose
    signed sub-value ranks the answer within the top `vocab_top` tokens of the vocabulary
    (`vocabulary_rank`). Ablate the top-k interpretable neurons by score vs the top-k by score alone.
    Rows: prompt, relation, set (interpretable/score), n_neurons, log_prob_before/after,
    correct_before/after, log_prob_drop."""
    prompts, targets = list(prompts), list(targets)
    relations = [None] * len(prompts) if relations is None else list(relations)
    target_ids = target_token_ids(bridge, targets, len(prompts))
    acts = neuron_activations(bridge, prompts, positions)
    top = top_value_neurons(bridge, prompts, target_ids.tolist(), n_candidates, positions,
                            memory_budget=memory_budget, activations=acts)
    rows = []
    for b, prompt in enumerate(prompts):
        cand = top[top["prompt"] == b]
        pairs = list(zip(cand["layer"].tolist(), cand["neuron"].tolist()))
        signs = [float(torch.sign(acts.coefficients[b, acts.layers.index(l), n])) for l, n in pairs]
        ranks = vocabulary_rank(bridge, pairs, int(target_ids[b]), signs)
        interpretable = [p for p, r in zip(pairs, ranks) if r <= vocab_top][:k]
        by_score = pairs[:k]
        before = answer_log_probs(bridge, [prompt], [int(target_ids[b])], _one(positions, b))
        for name, chosen in (("interpretable", interpretable), ("score", by_score)):
            with ablate_neurons(bridge, _neuron_set(chosen), mode, mean_values):
                after = answer_log_probs(bridge, [prompt], [int(target_ids[b])], _one(positions, b))
            rows.append(dict(
                prompt=b, relation=relations[b], set=name, n_neurons=len(chosen),
                log_prob_before=float(before["log_prob"][0]), log_prob_after=float(after["log_prob"][0]),
                correct_before=bool(before["correct"][0]), correct_after=bool(after["correct"][0]),
            ))
    frame = pd.DataFrame(rows)
    frame["log_prob_drop"] = frame["log_prob_before"] - frame["log_prob_after"]
    return frame
