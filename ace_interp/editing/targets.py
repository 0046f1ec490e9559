"""Compute target values: the vector a site should output at the subject's last token for the new fact.

For each request we optimise a delta δ added to the output of one *site* of layer L at the subject's last
token, in every prompt (ROME `compute_v`, MEMIT `compute_z`, PMET `compute_zs`):

    site "resid": the residual stream after block L            (MEMIT: z = h^L + δ)
    site "mlp":   the FFN output of block L                      (ROME: v* = F^L + δ; PMET/ACE)
    site "attn":  the attention output of block L                (PMET optimises it jointly with "mlp")

    loss(δ) = 1/|C| Σ_c −(1/T) Σ_t log p(target_t | c ⊕ prompt(s) ⊕ target_<t)          (efficacy)
            + kl_factor · KL(p_δ(· | "{s} is a") ‖ p_0(· | "{s} is a"))                   (essence)
            + subject_kl_factor · KL(p_δ(· | "{s}") ‖ p_0(· | "{s}"))  at the subject's last token of "{s} is a"
            + v_weight_decay · Σ_sites ‖δ‖ / ‖z_0‖^decay_power
    after each Adam step: δ ← δ · min(1, clamp_norm_factor·‖z_0‖ / ‖δ‖)

By default all requests of a batch are optimised in one forward pass per step (rows are independent and Adam is
element-wise, so this equals optimising each request on its own, except for the shared early stop);
`TargetHParams.per_request` optimises them one after another, each with its own stop, as the references do.
The stopping rules (`TargetHParams` docstring) are the tuned preset's (every NLL term < early_stop_loss) or the
references' (total loss < 0.05 — MEMIT compute_z, ROME compute_v; plus PMET compute_zs's argmax rule).
Gradients reach only δ: the model's parameters are frozen for the duration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.editing.keys import (
    SuffixForward,
    add_at_positions,
    add_through_write,
    build_batch,
    capture_output,
    concat_batches,
    frozen_parameters,
    hf_runner,
    hooks,
)
from ace_interp.editing.requests import EditRequest
from ace_interp.editing.timing import stage
from ace_interp.model.architecture import check_layer

log = logging.getLogger(__name__)

SITES = ("resid", "mlp", "attn")


@dataclass
class TargetHParams:
    """Optimisation of the target vector z (ROME/MEMIT `compute_v`/`compute_z`, PMET `compute_zs`).

    loss = c · mean NLL(target_new | context + prompt)          over the context prefixes (c = nll_factor)
         + kl_factor · KL(p_δ ‖ p_0) on `kl_prompt`'s next token  (keeps "{subject} is a" unchanged; our term)
         + subject_kl_factor · the same KL at the subject's last token of `kl_prompt` — this is the KL term of
           ROME / MEMIT / PMET / ACE (`kl_factor` in their hparams; `logits[i, lookup_idx]` in compute_v/z/zs)
         + v_weight_decay · ‖δ‖ / ‖z_0‖^decay_power               (the reference codes: power 2)
    Adam on δ, then δ is clamped to ‖δ‖ ≤ clamp_norm_factor · ‖z_0‖ after every step.

    Stopping: `stop_on="nll"` stops once every request's NLL term is below `early_stop_loss` (the tuned preset);
    `stop_on="loss"` once the total loss is (the references, `loss < 5e-2`). `argmax_nll_factor` (PMET's
    compute_zs): once the target is the argmax at every target position, the next step's NLL weight is
    c·argmax_nll_factor, and the optimisation stops if the KL terms are ≤ `argmax_kl_stop`. `per_request`
    optimises each request of a batch on its own, with a fresh δ and Adam (the references); False optimises
    them jointly with one shared stop.
    """

    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    decay_power: int = 2
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    kl_prompt: str = "{} is a"
    # The references' only KL term sits here (their `kl_factor`; the reference preset maps it to this field).
    # The tuned preset keeps `kl_factor` (the prompt's last token) and uses this one on adapted models for ROME
    # and ACE only: δ sits at the subject's last token, so it also changes what the model predicts right after
    # the subject; when another edit's answer names this subject, the edited model then derails in the middle of
    # that answer (SmolLM2: "Bucharest is the capital of" → " Denmark-Loraima"; docs/ace.md, "Chained edits")
    subject_kl_factor: float = 0.0
    early_stop_loss: float = 5e-2  # stop when every request's NLL term (stop_on="nll") or loss ("loss") is below
    stop_on: Literal["nll", "loss"] = "nll"
    nll_factor: float = 1.0  # c above (PMET's nll_loss_factor)
    argmax_nll_factor: float | None = None  # PMET: 0.1 once the target is the argmax; None: no such rule
    argmax_kl_stop: float = 0.01  # PMET: stop when the target is the argmax and the KL terms are at most this
    per_request: bool = False
    n_context: int = 5  # sampled context prefixes (plus the empty one)
    # (length, count) pairs of sampled prefixes, e.g. ROME's ((5, 10), (10, 10)); None: (context_length, n_context)
    context_lengths: tuple[tuple[int, int], ...] | None = None
    # optimise δ through the write at the target layer (`compute_targets(write_map=…)`): the loss sees what
    # Δ = Uδ does at every position, not only at the subject's last token (docs/ace.md, "Through the write")
    through_write: bool = False
    context_length: int = 10
    seed: int = 0
    # where δ is added and keys are read (ROME's `fact_token`): "subject_last", the references' setting, or
    # "last", the prompt's last token (ROME's other strategy) for models that build the fact there rather than at
    # the subject (`editing.calibrate`, docs/presets.md "Where the fact is read")
    fact_token: Literal["subject_last", "last"] = "subject_last"


@dataclass
class TargetResult:
    """Per site: z = z_0 + δ, the initial value z_0 and δ, each [n_requests, d_model]."""

    layer: int
    targets: dict[str, Float[Tensor, "n d_model"]]
    initial: dict[str, Float[Tensor, "n d_model"]]
    deltas: dict[str, Float[Tensor, "n d_model"]]
    losses: list[float] = field(default_factory=list)
    target_prob: Float[Tensor, " n"] | None = None  # mean p(target token) over prompts, at the end
    # per request: loss evaluations (forward passes; Adam steps = n_evals − 1) and why the optimisation stopped
    # ("loss<0.05", "nll<0.05", "pmet_argmax_and_kl<=0.01", "max_steps"); one entry for the whole batch unless per_request
    n_evals: list[int] = field(default_factory=list)
    stop_reasons: list[str] = field(default_factory=list)


def compute_targets(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    layer: int,
    hp: TargetHParams,
    contexts: Sequence[str] = ("",),
    sites: Sequence[str] = ("resid",),
    extra_prompts: Sequence[tuple[int, EditRequest]] = (),
    suffix_only: bool = True,
    write_map: Float[Tensor, "d_mlp n"] | None = None,
) -> TargetResult:
    """Optimise δ at `sites` of `layer` so the model predicts each request's target_new.

    `suffix_only` (where the architecture allows resuming at a block) runs each step on the tokens from
    the subject's last one onwards, over cached prefix keys/values (`keys.SuffixForward`); False runs
    blocks layer.. on the whole rows (the reference the fast path is tested against).

    `extra_prompts` adds (request index, prompt) pairs to the NLL term — each an EditRequest whose
    prompt holds the subject as `{}` and whose target_new is the answer wanted (ACE's multi-hop prompts).

    `write_map` (U of `solver.write_map` for this layer's edited keys) optimises *through the write*: the
    "mlp" (else "resid") delta is added as the W_out write Δ = U δ would add it — (k_p U) δ at every
    position p of every row, k_p the layer's key there — instead of at the subject's last token only. The
    optimised δ is then the residual the solver writes, and what the edit does to the other positions of
    the prompt (the final one above all) is part of the loss. Runs every position, so no suffix fast path.
    """
    with stage("targets"):
        if not hp.per_request or len(requests) == 1:
            return _optimise(bridge, requests, layer, hp, contexts, sites, extra_prompts, suffix_only, write_map)
        parts = [
            _optimise(bridge, [r], layer, hp, contexts, sites, [(0, p) for j, p in extra_prompts if j == i],
                      suffix_only, None if write_map is None else write_map[:, i : i + 1])
            for i, r in enumerate(requests)
        ]
        return _stack_results(parts)


def _stack_results(parts: Sequence[TargetResult]) -> TargetResult:
    """One TargetResult from the single-request results of `per_request` optimisation (request order kept)."""

    def cat(name: str) -> dict[str, Tensor]:
        return {s: torch.cat([getattr(p, name)[s] for p in parts]) for s in getattr(parts[0], name)}

    return TargetResult(
        layer=parts[0].layer, targets=cat("targets"), initial=cat("initial"), deltas=cat("deltas"),
        # per step, the largest loss of any request still running or stopped (its last loss)
        losses=[max(p.losses[min(i, len(p.losses) - 1)] for p in parts) for i in range(max(len(p.losses) for p in parts))],
        target_prob=torch.cat([p.target_prob for p in parts]),
        n_evals=[n for p in parts for n in p.n_evals], stop_reasons=[r for p in parts for r in p.stop_reasons],
    )


def _optimise(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    layer: int,
    hp: TargetHParams,
    contexts: Sequence[str],
    sites: Sequence[str],
    extra_prompts: Sequence[tuple[int, EditRequest]],
    suffix_only: bool,
    write_map: Tensor | None = None,
) -> TargetResult:
    layer = check_layer(bridge, layer)
    bad = [s for s in sites if s not in SITES]
    if bad or not sites:
        raise ValueError(f"unknown target sites {bad or sites}; expected some of {SITES}")
    runner = hf_runner(bridge)
    n_req = len(requests)
    rewrite = build_batch(bridge, requests, contexts, with_target=True, fact_token=hp.fact_token)
    parts = [rewrite]
    if extra_prompts:
        parts.append(
            build_batch(bridge, [p for _, p in extra_prompts], ("",), with_target=True, owners=[i for i, _ in extra_prompts],
                        fact_token=hp.fact_token)
        )
    kl_requests = [EditRequest(hp.kl_prompt, r.subject, r.target_new) for r in requests]
    use_kl = hp.kl_factor > 0 or hp.subject_kl_factor > 0
    kl = build_batch(bridge, kl_requests, ("",), fact_token=hp.fact_token) if use_kl else None
    if kl is not None:
        parts.append(kl)
    batch = concat_batches(bridge, *parts) if len(parts) > 1 else rewrite
    # blocks below `layer` and positions before the subject's last token do not depend on δ: compute them
    # once (SuffixForward), or at least resume every step from the residual entering `layer`
    resume = runner.can_resume()
    suffix = SuffixForward(runner, batch, layer) if (resume and suffix_only and write_map is None) else None
    if suffix is not None:
        batch = suffix.batch
        log.debug("target optimisation on %d of %d tokens per step", suffix.n_tokens_suffix, suffix.n_tokens_full)
    resid_in = runner.block_input(batch.tokens, layer) if (resume and suffix is None) else None

    def forward():
        if suffix is not None:
            return suffix.hidden()
        return runner.hidden_from(layer, resid_in) if resume else runner.hidden(batch.tokens)

    n_nll = batch.n - (kl.n if kl is not None else 0)
    # the first row of each request is its bare prompt (context ""): z_0 is read there
    c0 = list(contexts).index("") if "" in contexts else 0
    first_row = torch.tensor([i * len(contexts) + c0 for i in range(n_req)], device=batch.tokens.device)

    d_model = bridge.cfg.d_model
    dtype = next(runner.model.parameters()).dtype
    deltas = {s: torch.zeros(n_req, d_model, dtype=torch.float32, device=batch.tokens.device, requires_grad=True) for s in sites}
    modules = {"resid": runner.blocks, "mlp": runner.mlp, "attn": runner.attn}
    initial: dict[str, Tensor] = {}
    init_store: dict[str, list] = {s: [] for s in sites}
    # target token positions and ids for the NLL rows
    tgt = batch.target_ids[:n_nll]
    mask = tgt != -100
    n_target_tokens = mask.sum(1).clamp_min(1)
    kl_rows = n_nll + torch.arange(kl.n, device=batch.tokens.device) if kl is not None else None
    # KL positions: the prompt's last token, and the subject's last one (where δ is added)
    kl_sites = [] if kl is None else [
        (f, pos) for f, pos in ((hp.kl_factor, batch.lengths[n_nll:] - 1), (hp.subject_kl_factor, batch.lookup[n_nll:]))
        if f > 0
    ]
    kl_init: list[Tensor | None] = [None] * len(kl_sites)

    opt = torch.optim.Adam(list(deltas.values()), lr=hp.v_lr)
    losses: list[float] = []
    nll_weight = torch.full((n_req,), float(hp.nll_factor), device=batch.tokens.device)
    stop_reason = "max_steps"
    target_prob = None
    through = ("mlp" if "mlp" in sites else "resid") if write_map is not None else None
    if write_map is not None and (write_map.ndim != 2 or write_map.shape[1] != n_req):
        raise ValueError(f"write_map must be [d_mlp, {n_req}], got {tuple(write_map.shape)}")
    factories = [
        (lambda s=s: add_at_positions(modules[s][layer], batch.rows, batch.lookup, lambda s=s: deltas[s][batch.owner].to(dtype)))
        for s in sites
        if s != through
    ]
    if through is not None:
        factories.append(lambda: add_through_write(runner.down_proj[layer], write_map, lambda: deltas[through]))
    with frozen_parameters(runner.model), hooks(*factories):
        for step in range(max(1, hp.v_num_grad_steps)):
            opt.zero_grad()
            if step == 0:
                with hooks(*[(lambda s=s: capture_output(modules[s][layer], init_store[s])) for s in sites]):
                    hidden = forward()
                # δ is zero at step 0, so the captured outputs are the unedited z_0
                initial = {s: init_store[s][0][first_row, batch.lookup[first_row]].detach().float() for s in sites}
            else:
                hidden = forward()
            # log-probs only where needed: target positions of NLL rows and the last position of KL rows
            pos_rows, pos_cols = mask.nonzero(as_tuple=True)
            lp = runner.head(hidden[pos_rows, pos_cols]).float().log_softmax(-1)
            token_lp = lp.gather(-1, tgt[pos_rows, pos_cols].unsqueeze(-1)).squeeze(-1)
            per_row = torch.zeros(n_nll, device=lp.device).index_add(0, pos_rows, token_lp) / n_target_tokens
            nll_per_req = -_mean_by_owner(per_row, batch.owner[:n_nll], n_req)
            loss_per_req = nll_weight * nll_per_req
            kl_per_req = torch.zeros_like(nll_per_req)
            for i, (factor, pos) in enumerate(kl_sites):
                kl_lp = runner.head(hidden[kl_rows, pos]).float().log_softmax(-1)
                if kl_init[i] is None:
                    kl_init[i] = kl_lp.detach()
                kl_per_row = (kl_lp.exp() * (kl_lp - kl_init[i])).sum(-1)  # KL(p_δ ‖ p_0), as MEMIT's kl_div call
                kl_per_req = kl_per_req + factor * _mean_by_owner(kl_per_row, batch.owner[n_nll:], n_req)
            loss_per_req = loss_per_req + kl_per_req
            for s in sites:
                norm0 = initial[s].norm(dim=-1).clamp_min(1e-8)
                loss_per_req = loss_per_req + hp.v_weight_decay * deltas[s].norm(dim=-1) / norm0**hp.decay_power
            loss = loss_per_req.sum()
            losses.append(float(loss_per_req.detach().max()))
            with torch.no_grad():
                target_prob = _mean_by_owner(
                    torch.zeros(n_nll, device=lp.device).index_add(0, pos_rows, token_lp.exp()) / n_target_tokens,
                    batch.owner[:n_nll], n_req,
                )
            # The tuned preset stops once every request's NLL term is small; the references once the total loss
            # is (ROME compute_v, MEMIT compute_z, PMET compute_zs: `if loss < 5e-2: break`), which the weight
            # decay keeps above 0.05 once δ has grown (with decay power 1 the toys never stopped early).
            watched = nll_per_req if hp.stop_on == "nll" else loss_per_req
            if float(watched.detach().max()) < hp.early_stop_loss:
                stop_reason = f"{hp.stop_on}<{hp.early_stop_loss:g}"
                break
            if hp.argmax_nll_factor is not None:
                # PMET compute_zs: when the target is the argmax at every target position of every rewriting row,
                # the next step weighs the NLL by argmax_nll_factor, and a small enough KL ends the optimisation
                with torch.no_grad():
                    hit = (lp.max(-1).values == token_lp).float()
                    all_hit = torch.zeros(n_nll, device=lp.device).index_add(0, pos_rows, 1 - hit) == 0
                    req_hit = _mean_by_owner(all_hit.float(), batch.owner[:n_nll], n_req) == 1
                nll_weight = torch.where(req_hit, hp.nll_factor * hp.argmax_nll_factor, hp.nll_factor)
                if bool(req_hit.all()) and float(kl_per_req.detach().max()) <= hp.argmax_kl_stop:
                    stop_reason = f"pmet_argmax_and_kl<={hp.argmax_kl_stop:g}"
                    break
            # the reference's "it == v_num_grad_steps - 1": N steps are N forwards and N - 1 updates; with N = 0
            # the one forward (needed for z_0) is not followed by an update either, so δ stays 0
            if step >= hp.v_num_grad_steps - 1:
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                for s in sites:
                    max_norm = hp.clamp_norm_factor * initial[s].norm(dim=-1, keepdim=True)
                    norms = deltas[s].norm(dim=-1, keepdim=True).clamp_min(1e-12)
                    deltas[s].mul_(torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms)))
    log.debug("target optimisation at layer %d: loss %.3f -> %.3f in %d steps", layer, losses[0], losses[-1], len(losses))
    final = {s: deltas[s].detach().clone() for s in sites}
    return TargetResult(
        layer=layer,
        targets={s: initial[s] + final[s] for s in sites},
        initial=initial,
        deltas=final,
        losses=losses,
        target_prob=target_prob,
        n_evals=[len(losses)],
        stop_reasons=[stop_reason],
    )


def _mean_by_owner(values: Tensor, owner: Tensor, n: int) -> Tensor:
    summed = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, owner, values)
    return summed / torch.bincount(owner, minlength=n).to(values.dtype).clamp_min(1)


def compute_z(
    bridge: TransformerBridge, requests: Sequence[EditRequest], layer: int, hp: TargetHParams, contexts: Sequence[str]
) -> Float[Tensor, "n d_model"]:
    """MEMIT's z: the residual after block `layer` that makes the model predict each target_new."""
    return compute_targets(bridge, requests, layer, hp, contexts, sites=("resid",)).targets["resid"]


def compute_z_pmet(
    bridge: TransformerBridge,
    requests: Sequence[EditRequest],
    layer: int,
    hp: TargetHParams,
    contexts: Sequence[str],
    extra_prompts: Sequence[tuple[int, EditRequest]] = (),
    write_map: Float[Tensor, "d_mlp n"] | None = None,
    joint_attention: bool = True,
) -> TargetResult:
    """PMET's joint optimisation of the attention and FFN output deltas at `layer`; only the FFN target
    (`.targets["mlp"]`) is written by PMET and ACE, the attention part absorbs what attention would carry.
    `joint_attention=False` optimises the FFN delta alone (ROME's v*), so all of the shift is written."""
    sites = ("attn", "mlp") if joint_attention else ("mlp",)
    return compute_targets(
        bridge, requests, layer, hp, contexts, sites=sites, extra_prompts=extra_prompts, write_map=write_map
    )
