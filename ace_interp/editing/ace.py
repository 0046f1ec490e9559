"""ACE: attribution-controlled knowledge editing, over the PMET backend (docs/ace.md has the derivation).

Two layer groups. The *value* group holds the neurons that write the fact's answer; the *query* group holds
shallower neurons that activate them. Both are written in W_out; with `write_attention` (the release's layout,
`variant="ace-paper"` only) each of their layers' attention output projection W_O is written too, towards the
joint optimisation's attention target z_attn = A^{V_max} + δ_attn:
    per layer l (W_O first):  R = (z_attn − A^{V_max}(current)) / sqrt(|G| − j),  ΔW_O^l = solve(K_attn^l, R, C_attn^l, λ)

variant "ace-paper" (the authors' released implementation):
    z = F^{V_max} + δ_ffn from PMET's joint optimisation at the last value layer V_max
    for each group G (ascending), for its j-th layer l:
        R = (z − F^{V_max}(current)) / sqrt(|G| − j),   Δ^l = solve(K^l, R, C^l, λ)

With `value_target_after_query` (the default on models other than the paper's two) the query group is written
first and the value group's target is optimised again on the model with that write in place:
    z_v = F^{V_max} + δ_ffn optimised on W + Δ_query;  the value group spreads towards z_v as above.

With `spread_accounting="residual"` each group measures what is left on the residual after its z layer
(z_h = h + δ_ffn, as PMET's option; docs/ace.md, "Spread accounting").

variant "attribution" (built on it):
    groups from `ace_interp.attribution.layers.rank_layers` over the requests' prompts and their multi-hop
    prompts (top `n_value_layers` value layers; top `n_query_layers` query layers below the value group),
    or given explicitly;
    1. value write exactly as above (z at V_max, sqrt spread within the value group);
    2. with `query_target="own"`: a second PMET target z_q at the last query layer Q_max, optimised on the
       model *with the value write in place*, over the single-hop prompt and the edit's multi-hop prompts
       (their new answers): the subject representation leaving the query layers must carry the new bridge
       entity so that the following hops' value neurons fire; then the sqrt spread within the query group
       towards z_q (scaled by `query_weight`). `query_target="shared"` reuses z as the paper does.
    With `value_target_after_query` the own target goes first: z_q on the unedited model and the query
    write, then the value target optimised with the query write in place and the value write.

The implicit-subject write (`implicit_layers`, either variant; off by default): for an edit of s, noun phrases
that reach s through another entity (`ImplicitSubject`: "y 's birthplace" for a city s) put the bridge where a
multi-hop question holds it, implicitly. One key per edit, averaged over its phrases, and PMET's target at the
last implicit layer over the phrase prompts; written first, so the groups' targets see it (docs/ace.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import torch
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.hparams import ACEHParams
from ace_interp.editing.keys import outputs_at_subject
from ace_interp.editing.memit import (
    MethodResult,
    SpreadStep,
    spread_divisors,
    spread_write,
    sqrt_spread_steps,
    target_write_map,
)
from ace_interp.editing.requests import EditRequest, HopPrompt, ImplicitSubject
from ace_interp.editing.targets import compute_z_pmet
from ace_interp.editing.timing import stage
from ace_interp.model.architecture import check_layer
from ace_interp.model.weights import apply_weight_updates

log = logging.getLogger(__name__)


def implicit_subject_requests(
    requests: Sequence[EditRequest], phrases: Sequence[ImplicitSubject]
) -> tuple[list[EditRequest], list[int]]:
    """(rows, owners) for the implicit-subject write: one EditRequest per phrase (its request's prompt and
    targets, the phrase as subject) and the row's owner (0..m−1, the requests that have phrases, in order)."""
    for p in phrases:
        if not 0 <= p.request < len(requests):
            raise ValueError(f"implicit subject {p.phrase!r} refers to request {p.request}; there are {len(requests)}")
        if not p.phrase.strip():
            raise ValueError(f"implicit subject of request {p.request} is an empty phrase")
    edited = sorted({p.request for p in phrases})
    owner_of = {r: j for j, r in enumerate(edited)}
    ordered = sorted(phrases, key=lambda p: owner_of[p.request])
    rows = [EditRequest(requests[p.request].prompt, p.phrase, requests[p.request].target_new,
                        requests[p.request].target_true, requests[p.request].case_id) for p in ordered]
    return rows, [owner_of[p.request] for p in ordered]


def implicit_subject_write(
    bridge: TransformerBridge, requests: Sequence[EditRequest], phrases: Sequence[ImplicitSubject], hp: ACEHParams
) -> MethodResult:
    """The implicit-subject write (docs/ace.md, "The implicit subject"). Per edit i with phrases P_i:

        k_i^l = mean_{p ∈ P_i} key at l at the phrase's last token of prompt_i(p)
        δ_i   = PMET's FFN delta at L = max(implicit_layers), one per edit, added at the phrase's last token
                of every prompt_i(p) (NLL of target_new averaged over them)
        z_i   = mean_{p ∈ P_i} F^L(prompt_i(p)) + δ_i,  spread over the layers by sqrt(layers left)

    The averaged key is what generalises to phrases not in P_i: each phrase's key mixes the other entity with
    the bridge it reaches, and the mean keeps the bridge (one key row per phrase reached 1–3 of 12 held-out
    questions on toy-gptj, the mean 7–9; docs/ace.md)."""
    rows, owners = implicit_subject_requests(requests, phrases)
    if not hp.implicit_layers:
        raise ValueError("the implicit-subject write needs ACEHParams.implicit_layers")
    layers = sorted(check_layer(bridge, l) for l in hp.implicit_layers)
    z_layer, cov = layers[-1], replace(hp.covariance, context_keys="mean")
    first = {o: j for j, o in reversed(list(enumerate(owners)))}  # each owner's first row carries its target
    heads = [rows[first[o]] for o in range(len(first))]
    extra = [(o, r) for j, (o, r) in enumerate(zip(owners, rows)) if j != first[o]]
    mapping = (target_write_map(bridge, rows, z_layer, ("",), cov, owners=owners, fact_token=hp.target.fact_token)
               if hp.target.through_write else None)
    target = compute_z_pmet(bridge, heads, z_layer, hp.target, ("",), extra_prompts=extra, write_map=mapping,
                            joint_attention=hp.joint_attention)
    with torch.no_grad():
        z = outputs_at_subject(bridge, rows, z_layer, "mlp", owners=owners, fact_token=hp.target.fact_token) + target.deltas["mlp"]
    steps = [SpreadStep(l, z, z_layer, "mlp", d, hp.implicit_weight)
             for l, d in zip(layers, spread_divisors(len(layers), "sqrt"))]
    result = spread_write(bridge, rows, steps, ("",), cov, owners=owners, fact_token=hp.target.fact_token)
    result.info.update(implicit_target_prob=target.target_prob, implicit_layers=layers, n_implicit_subjects=len(rows))
    return result


def hop_prompts_as_requests(
    requests: Sequence[EditRequest], hops: Sequence[HopPrompt]
) -> list[tuple[int, EditRequest]]:
    """(request index, EditRequest) per hop prompt, the subject's first mention becoming `{}`.

    Hop prompts that do not mention the subject cannot be tied to its token and are skipped (logged).
    """
    out = []
    for h in hops:
        if not 0 <= h.request < len(requests):
            raise ValueError(f"hop prompt {h.prompt!r} refers to request {h.request}; there are {len(requests)}")
        subject = requests[h.request].subject
        if "{}" in h.prompt:
            template = h.prompt
        elif subject in h.prompt:
            template = h.prompt.replace(subject, "{}", 1)
        else:
            log.warning("hop prompt %r does not mention subject %r; not used", h.prompt, subject)
            continue
        out.append((h.request, EditRequest(template, subject, h.answer)))
    return out


def choose_layers(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    hp: ACEHParams,
    hops: Sequence[HopPrompt] = (),
    ranking=None,
) -> tuple[list[int], list[int], object]:
    """(query_layers, value_layers, ranking) for the attribution variant.

    The ranking is `attribution.layers.rank_layers` over the requests' single-hop prompts (target: the
    answer the model gives now, `target_true`, else the new one) and their hop prompts, unless given.
    """
    if ranking is None:
        from ace_interp.attribution.layers import rank_layers

        prompts = [r.text for r in requests] + [h.prompt.replace("{}", requests[h.request].subject) for h in hops]
        targets = [r.target_true or r.target_new for r in requests] + [h.answer for h in hops]
        ranking = rank_layers(bridge, prompts, [" " + t.strip() for t in targets], top_k_layers=bridge.cfg.n_layers)
    value = sorted(ranking.value_layers[: hp.n_value_layers])
    if not value:
        raise ValueError("the attribution ranking found no value layers with a positive score")
    query = sorted([l for l in ranking.query_layers if l < max(value) and l not in value][: hp.n_query_layers])
    return query, value, ranking


def ace_updates(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    hp: ACEHParams,
    contexts: Sequence[str],
    hops: Sequence[HopPrompt | ImplicitSubject] = (),
    ranking=None,
) -> MethodResult:
    """ACE's W_out deltas. `hops` holds the edit's multi-hop material: `HopPrompt`s (the query target's
    prompts) and `ImplicitSubject`s (the implicit-subject write's phrases, used when `hp.implicit_layers`)."""
    phrases = [h for h in hops if isinstance(h, ImplicitSubject)]
    hops = [h for h in hops if not isinstance(h, ImplicitSubject)]
    if not (hp.implicit_layers and phrases):
        return _query_value_updates(bridge, requests, hp, contexts, hops, ranking)
    # the implicit-subject write goes first, on the unedited model; the query and value targets are then
    # optimised with it in place, so their KL and NLL terms see what it does to the edited prompts
    implicit = implicit_subject_write(bridge, requests, phrases, hp)
    with apply_weight_updates(bridge, implicit.updates, label="ace implicit-subject write (temporary)"):
        rest = _query_value_updates(bridge, requests, hp, contexts, hops, ranking)
    info = {k: v for k, v in {**implicit.info, **rest.info}.items() if k != "residual_norms"}  # _combine joins those
    return _merge(_combine(implicit, rest), info)


def _query_value_updates(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    hp: ACEHParams,
    contexts: Sequence[str],
    hops: Sequence[HopPrompt],
    ranking,
) -> MethodResult:
    if hp.variant == "ace-paper":
        query, value = sorted(hp.query_layers), sorted(hp.value_layers)
        shared = True
    elif hp.variant == "attribution":
        if ranking is not None or hp.rank_layers:
            with stage("ranking"):
                query, value, ranking = choose_layers(bridge, requests, hp, hops, ranking)
        else:
            query, value = sorted(hp.query_layers), sorted(hp.value_layers)
        shared = hp.query_target == "shared"  # None (default) means "own" in this variant
    else:
        raise ValueError(f"unknown ACE variant {hp.variant!r}; expected 'ace-paper' or 'attribution'")
    value = [check_layer(bridge, l) for l in value]
    query = [check_layer(bridge, l) for l in query]
    if not value:
        raise ValueError("ACE needs at least one value layer")
    if hp.value_target_after_query and query and max(query) >= min(value):
        raise ValueError(f"value_target_after_query needs the query layers {query} below the value layers {value}")
    if hp.write_attention and not (hp.variant == "ace-paper" and hp.joint_attention and hp.spread_accounting == "ffn"
                                   and not hp.value_target_after_query):
        raise ValueError("write_attention is the release's layout: it needs variant='ace-paper', joint_attention=True, "
                         "spread_accounting='ffn' and value_target_after_query=False")
    z_layer = value[-1]
    through = hp.target.through_write
    info = {"query_layers": query, "value_layers": value, "z_layer": z_layer, "ranking": ranking}
    attention_target = {}

    def value_target(label: str):
        """PMET's target at the last value layer, on the model as it is now (with any temporary write)."""
        mapping = target_write_map(bridge, requests, z_layer, contexts, hp.covariance, fact_token=hp.target.fact_token) if through else None
        result = compute_z_pmet(bridge, requests, z_layer, hp.target, contexts, write_map=mapping,
                                joint_attention=hp.joint_attention)
        info.setdefault("target_prob", result.target_prob)
        info.setdefault("target_losses", result.losses)
        info[label] = result.target_prob
        attention_target["attn"] = result.targets.get("attn")
        return result.targets["mlp"]

    def query_target(hop_rows):
        """The query group's own target at its last layer, over the single-hop and the hop prompts."""
        q_layer = query[-1]
        q_map = target_write_map(bridge, requests, q_layer, contexts, hp.covariance, fact_token=hp.target.fact_token) if through else None
        result = compute_z_pmet(bridge, requests, q_layer, hp.target, contexts, extra_prompts=hop_rows, write_map=q_map,
                                joint_attention=hp.joint_attention)
        info.update(query_target_prob=result.target_prob, query_z_layer=q_layer, n_hop_prompts=len(hop_rows))
        return result.targets["mlp"], q_layer

    def group_steps(layers, z_, z_layer_, scale):
        return sqrt_spread_steps(bridge, requests, layers, z_, z_layer_, hp.spread_accounting, scale, fact_token=hp.target.fact_token)

    def write(layers, z_, z_layer_, scale):
        return spread_write(bridge, requests, group_steps(layers, z_, z_layer_, scale), contexts, hp.covariance, fact_token=hp.target.fact_token)

    def then_value(query_result):
        """The value group towards a target optimised with the query write in place (`value_target_after_query`)."""
        with apply_weight_updates(bridge, query_result.updates, label="ace query write (temporary)"):
            value_result = write(value, value_target("value_target_prob"), z_layer, 1.0)
        return _merge(_combine(query_result, value_result), info)

    query_writes = bool(query) and hp.query_weight > 0
    if shared or not query:
        z = value_target("target_prob")
        if hp.value_target_after_query and query_writes:
            # the query group writes towards z first; the value group's target is then optimised again on the
            # model with that write in place, so its KL terms see what the query write did (docs/ace.md)
            return then_value(write(query, z, z_layer, hp.query_weight))
        steps = []
        groups = sorted([(query, hp.query_weight), (value, 1.0)], key=lambda g: min(g[0]) if g[0] else 0)
        for layers, scale in groups:
            if layers and scale > 0:
                ffn = group_steps(layers, z, z_layer, scale)
                if hp.write_attention:  # per layer, W_O towards z_attn before W_out (the release's order)
                    ffn = [s for f in ffn for s in (replace(f, z=attention_target["attn"], site="attn", writes="W_O"), f)]
                steps += ffn
        return _merge(spread_write(bridge, requests, steps, contexts, hp.covariance, fact_token=hp.target.fact_token), info)

    hop_rows = hop_prompts_as_requests(requests, hops) if query_writes else []
    if hp.value_target_after_query and query_writes:
        # attribution variant, query group first: its own target over the single-hop and hop prompts on the
        # unedited model, then the value group's target on the model with the query write in place
        z_q, q_layer = query_target(hop_rows)
        return then_value(write(query, z_q, q_layer, hp.query_weight))
    # value write first, then the query target on top of it
    value_result = write(value, value_target("target_prob"), z_layer, 1.0)
    if not query_writes:
        return _merge(value_result, info)
    with apply_weight_updates(bridge, value_result.updates, label="ace value write (temporary)"):
        z_q, q_layer = query_target(hop_rows)
        query_result = write(query, z_q, q_layer, hp.query_weight)
    return _merge(_combine(value_result, query_result), info)


def _combine(first: MethodResult, second: MethodResult) -> MethodResult:
    """Two writes made one after the other, as one: their deltas summed per weight."""
    updates = dict(first.updates)
    for k, d in second.updates.items():
        updates[k] = updates[k] + d if k in updates else d
    return MethodResult(updates, {"residual_norms": first.info["residual_norms"] + second.info["residual_norms"]})


def _merge(result: MethodResult, info: dict) -> MethodResult:
    result.info.update(info)
    return result
