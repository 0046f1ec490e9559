"""Value scores against a brute-force per-neuron loop through the HF final norm and lm_head."""

import pytest
import torch

from ace_interp.attribution import (
    additivity_check,
    component_scores,
    log_prob_increase,
    target_token_ids,
    top_mean_value_neurons,
    top_value_neurons,
    value_neurons_above,
    value_scores,
)
from ace_interp.attribution.value import (
    BOUND_SLACK,
    _log_mean_exp,
    frozen_log_probs,
    sub_value_logits,
    value_scores_for,
    value_upper_bounds,
)
from ace_interp.model import final_norm_scale
from ace_interp.model import neuron_activations
from ace_interp.model.architecture import final_norm_module, unembed_module

PROMPTS = ["the capital of france is", "the language of spain is spanish and"]
TARGETS = ["paris", "the"]


def reference_log_prob(bridge, resid, target, frozen_from=None):
    """log p(target | resid) through the HF final norm module and lm_head, one residual at a time.

    With `frozen_from`, the norm's divisor is that residual's (written out by hand; checked against the
    module on `frozen_from` itself)."""
    norm, head = final_norm_module(bridge), unembed_module(bridge)
    if frozen_from is None:
        normed = norm(resid[None])[0]
    else:
        layernorm = isinstance(norm, torch.nn.LayerNorm)
        eps = norm.eps if layernorm else norm.variance_epsilon

        def by_hand(r, ref):
            c = (r - r.mean()) if layernorm else r
            cref = (ref - ref.mean()) if layernorm else ref
            out = c / (cref.pow(2).mean() + eps).sqrt() * norm.weight
            return out + norm.bias if getattr(norm, "bias", None) is not None else out

        assert torch.allclose(by_hand(frozen_from, frozen_from), norm(frozen_from[None])[0], atol=1e-5)
        normed = by_hand(resid, frozen_from)
    return head(normed).log_softmax(-1)[target]


@pytest.mark.parametrize("norm,method", [("frozen", "projected"), ("frozen", "direct"), ("recomputed", "auto")])
def test_value_scores_equal_brute_force(tiny_model, norm, method):
    bridge = tiny_model
    vs = value_scores(bridge, PROMPTS, TARGETS, norm=norm, method=method)
    acts = neuron_activations(bridge, PROMPTS)
    W_out = bridge.W_out  # TL's own stacked copy, independent of ffn_weight
    assert vs.scores.shape == (2, bridge.cfg.n_layers, bridge.cfg.d_mlp)
    with torch.no_grad():
        for b in range(2):
            w = int(vs.target_ids[b])
            frozen = acts.final_resid[b] if norm == "frozen" else None
            for l in range(bridge.cfg.n_layers):
                x = acts.resid_pre[b, l] + acts.attn_out[b, l]
                base = reference_log_prob(bridge, x, w, frozen)
                assert vs.base_log_probs[b, l] == pytest.approx(float(base), abs=1e-5)
                ref = torch.stack(
                    [
                        reference_log_prob(bridge, x + acts.coefficients[b, l, k] * W_out[l, k], w, frozen) - base
                        for k in range(bridge.cfg.d_mlp)
                    ]
                )
                torch.testing.assert_close(vs.scores[b, l], ref, atol=2e-6, rtol=1e-4)
    assert vs.scores.abs().max() > 1e-3  # the comparison is not between zeros


def test_chunking_gives_identical_numbers(tiny_model):
    # identical up to float32 rounding: a GEMM over 1 row vs 128 rows may round the last bit differently
    # (|log p| ≈ 4 → 1 ulp ≈ 4.8e-7), so the tolerance is ~2 ulp and nothing looser
    whole = value_scores(tiny_model, PROMPTS, TARGETS, memory_budget=None)
    one_row = 2 * tiny_model.cfg.d_vocab * 4
    for budget in (one_row, 7 * one_row):
        chunked = value_scores(tiny_model, PROMPTS, TARGETS, memory_budget=budget)
        torch.testing.assert_close(chunked.scores, whole.scores, atol=1e-6, rtol=0)
    rec_whole = value_scores(tiny_model, PROMPTS, TARGETS, norm="recomputed", memory_budget=None)
    rec_chunk = value_scores(tiny_model, PROMPTS, TARGETS, norm="recomputed", memory_budget=one_row)
    torch.testing.assert_close(rec_chunk.scores, rec_whole.scores, atol=1e-6, rtol=0)


def test_frozen_and_recomputed_differ(tiny_model):
    a = value_scores(tiny_model, PROMPTS, TARGETS, norm="frozen").scores
    b = value_scores(tiny_model, PROMPTS, TARGETS, norm="recomputed").scores
    assert not torch.allclose(a, b, atol=1e-6)


def test_projected_path_equals_direct_path(tiny_model):
    """P_l = (γ ⊙ c(fc2_l)) W_Uᵀ shared by the batch gives the direct path's numbers, chunked or not, for
    whole layers (`value_scores`) and explicit neuron lists (`value_scores_for`)."""
    acts = neuron_activations(tiny_model, PROMPTS)
    direct = value_scores(tiny_model, PROMPTS, TARGETS, activations=acts, method="direct")
    one_row = 2 * tiny_model.cfg.d_vocab * 4
    for budget in (None, one_row, 5 * one_row):
        projected = value_scores(tiny_model, PROMPTS, TARGETS, activations=acts, memory_budget=budget)
        torch.testing.assert_close(projected.scores, direct.scores, atol=1e-6, rtol=0)
        torch.testing.assert_close(projected.base_log_probs, direct.base_log_probs, atol=1e-6, rtol=0)
    pairs = [(2, 5), (0, 1), (2, 0), (1, 7), (0, 1)]  # any order, repeats allowed
    for b in range(2):
        w = int(direct.target_ids[b])
        got = value_scores_for(tiny_model, acts, b, w, pairs, memory_budget=one_row)
        ref = value_scores_for(tiny_model, acts, b, w, pairs, method="direct")
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(got, direct.scores[b][[l for l, _ in pairs], [k for _, k in pairs]], atol=1e-6, rtol=0)


def test_sub_value_logits_are_the_logit_change(tiny_model):
    # logits(x + m fc2_k) − logits(x) = (m / s) P_l[k] under the frozen norm (norm bias and b_U cancel)
    from ace_interp.model import apply_final_norm, sub_values, unembed

    x, s = torch.randn(tiny_model.cfg.d_model), torch.tensor([1.7])
    with torch.no_grad():
        fc2 = sub_values(tiny_model, 1)[:4]
        change = unembed(tiny_model, apply_final_norm(tiny_model, x + 0.3 * fc2, s)) - unembed(
            tiny_model, apply_final_norm(tiny_model, x[None], s)
        )
        torch.testing.assert_close(change, 0.3 / 1.7 * sub_value_logits(tiny_model, 1, torch.arange(4)), atol=1e-5, rtol=1e-4)


def test_log_mean_exp_shifted_and_unshifted_rows():
    # rows with |a|·max|P| > 20 nats take the max-shifted logsumexp; both kinds equal the float64 reference
    torch.manual_seed(0)
    P = torch.randn(6, 50) * 3
    steps = torch.tensor([0.0, 0.01, -1.0, 2.0, 30.0, -50.0])
    log_probs = (torch.randn(50) * 4).double().log_softmax(-1).float()
    reach = P.abs().amax(-1)
    got = _log_mean_exp(P, steps, log_probs, reach, torch.empty(8, 50))
    ref = torch.logsumexp(log_probs.double() + steps.double()[:, None] * P.double(), -1)
    torch.testing.assert_close(got.double(), ref, atol=2e-5, rtol=1e-6)
    assert torch.isfinite(got).all()
    # a real-sized vocabulary: the float32 result stays within 1e-6 nats of float64 (a float32 mat-vec did not)
    P = torch.randn(4, 49152)
    steps = torch.tensor([0.03, -0.01, 0.2, 0.0])
    log_probs = (torch.randn(49152) * 4).double().log_softmax(-1)
    got = _log_mean_exp(P, steps, log_probs.float(), P.abs().amax(-1), torch.empty(4, 49152))
    ref = torch.logsumexp(log_probs + steps.double()[:, None] * P.double(), -1)
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=0)


def test_projected_path_needs_frozen_norm_without_soft_cap(tiny_model):
    with pytest.raises(ValueError, match="projected"):
        value_scores(tiny_model, PROMPTS, TARGETS, norm="recomputed", method="projected")
    with pytest.raises(ValueError, match="scoring method"):
        value_scores(tiny_model, PROMPTS, TARGETS, method="fast")
    # a soft-capped model falls back to the direct path (logits are no longer affine in v)
    uncapped = value_scores(tiny_model, PROMPTS, TARGETS)
    tiny_model.cfg.output_logits_soft_cap = 0.5
    capped = value_scores(tiny_model, PROMPTS, TARGETS)
    torch.testing.assert_close(capped.scores, value_scores(tiny_model, PROMPTS, TARGETS, method="direct").scores)
    assert not torch.allclose(capped.scores, uncapped.scores, atol=1e-4)
    with pytest.raises(ValueError, match="soft cap"):
        value_scores(tiny_model, PROMPTS, TARGETS, method="projected")


@pytest.mark.parametrize("head_tokens", [0, 3, 16, 10**6])
def test_upper_bound_holds_and_tightens_with_the_head(tiny_model, head_tokens):
    acts = neuron_activations(tiny_model, PROMPTS)
    vs = value_scores(tiny_model, PROMPTS, TARGETS, activations=acts)
    layers = list(range(tiny_model.cfg.n_layers))
    for b in range(2):
        w, scale = int(vs.target_ids[b]), final_norm_scale(tiny_model, acts.final_resid[b])
        bound = value_upper_bounds(tiny_model, acts, b, w, layers, scale, head_tokens=head_tokens)
        assert (vs.scores[b] <= bound + 1e-6).all()
        # never looser than the plain linear (Jensen) bound Δ_w − E_p[Δ]
        with torch.no_grad():
            p = frozen_log_probs(tiny_model, acts.x[b], scale.expand(len(layers), 1)).exp()
            linear = torch.stack(
                [(acts.coefficients[b, l] / scale) * (sub_value_logits(tiny_model, l) @ (torch.eye(len(p[l]))[w] - p[l])) for l in layers]
            )
        assert (bound <= linear + 1e-6).all()
        if head_tokens >= tiny_model.cfg.d_vocab:  # the head is the whole vocabulary: the bound is exact
            torch.testing.assert_close(bound, vs.scores[b], atol=1e-5, rtol=0)


def assert_same_top_k(got, scores, k, tol=1e-6):
    """`got` (rows prompt, layer, neuron, score) is the top-k of `scores` [batch, n_layers, d_mlp]: the same
    scores in the same order, and the same neurons except where two scores tie within `tol`."""
    d = scores.shape[-1]
    for b in range(len(scores)):
        mine = got[got.prompt == b]
        flat = scores[b].reshape(-1)
        want = flat.topk(k).values
        assert mine.score.to_numpy() == pytest.approx(want.numpy(), abs=tol)
        chosen = torch.tensor([l * d + n for l, n in zip(mine.layer, mine.neuron)])
        assert len(set(chosen.tolist())) == k
        assert flat[chosen].numpy() == pytest.approx(mine.score.to_numpy(), abs=tol)  # each is its neuron's score
        assert float(flat[chosen].min()) >= float(want[-1]) - tol  # nothing outside beats what was chosen


@pytest.mark.parametrize("k", [1, 15, 100])
def test_pruned_top_k_equals_full_sort(tiny_model, k):
    # the top-k of the full sweep (direct path, an independent computation); 3-row chunks make the exact
    # rescoring iterate
    vs = value_scores(tiny_model, PROMPTS, TARGETS, method="direct")
    budget = 3 * 2 * tiny_model.cfg.d_vocab * 4
    top = top_value_neurons(tiny_model, PROMPTS, TARGETS, k=k, memory_budget=budget)
    assert_same_top_k(top, vs.scores, k)


def test_value_neurons_above_threshold(tiny_model):
    vs = value_scores(tiny_model, PROMPTS, TARGETS)
    threshold = float(vs.scores.flatten().quantile(0.95))
    above = value_neurons_above(tiny_model, PROMPTS, TARGETS, threshold, memory_budget=4 * 2 * tiny_model.cfg.d_vocab * 4)
    for b in range(2):
        want = {(l, k) for l, k in (vs.scores[b] > threshold).nonzero().tolist()}
        got = set(zip(above[above.prompt == b].layer, above[above.prompt == b].neuron))
        assert got == want and len(want) > 0


def test_positions_select_the_token(tiny_model):
    # position -2 of "... france is" is the last token of "... france" (causal attention)
    a = value_scores(tiny_model, ["the capital of france is"], ["paris"], positions=-2)
    b = value_scores(tiny_model, ["the capital of france"], ["paris"], positions=-1)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-6, rtol=1e-4)
    c = value_scores(tiny_model, ["the capital of france is"], ["paris"], positions=-1)
    assert not torch.allclose(a.scores, c.scores)


def test_component_scores_brute_force(tiny_model):
    cs = component_scores(tiny_model, PROMPTS, TARGETS)
    acts = neuron_activations(tiny_model, PROMPTS)
    with torch.no_grad():
        for b in range(2):
            w, fr = int(cs.target_ids[b]), acts.final_resid[b]
            for l in range(tiny_model.cfg.n_layers):
                h, A, F = acts.resid_pre[b, l], acts.attn_out[b, l], acts.mlp_out[b, l]
                ref_attn = reference_log_prob(tiny_model, h + A, w, fr) - reference_log_prob(tiny_model, h, w, fr)
                ref_ffn = reference_log_prob(tiny_model, h + A + F, w, fr) - reference_log_prob(tiny_model, h + A, w, fr)
                assert float(cs.attention[b, l]) == pytest.approx(float(ref_attn), abs=2e-6)
                assert float(cs.ffn[b, l]) == pytest.approx(float(ref_ffn), abs=2e-6)


@torch.no_grad()
def test_additivity_check(tiny_model):
    vs = value_scores(tiny_model, PROMPTS, TARGETS)
    frame = additivity_check(tiny_model, PROMPTS, TARGETS, top_k=5, scores=vs)
    assert len(frame) == 2 * tiny_model.cfg.n_layers
    acts = neuron_activations(tiny_model, PROMPTS)
    row = frame.iloc[1]
    b, l = int(row.prompt), int(row.layer)
    top = vs.scores[b, l].topk(5).indices
    assert row.sum_of_parts == pytest.approx(float(vs.scores[b, l, top].sum()), abs=1e-6)
    total = (acts.coefficients[b, l, top, None] * tiny_model.W_out[l, top]).sum(0)
    x = acts.resid_pre[b, l] + acts.attn_out[b, l]
    w, fr = int(vs.target_ids[b]), acts.final_resid[b]
    ref = reference_log_prob(tiny_model, x + total, w, fr) - reference_log_prob(tiny_model, x, w, fr)
    assert row.joint == pytest.approx(float(ref), abs=2e-6)
    # small vectors: the increase is close to additive
    assert (frame.difference.abs() <= 0.1 * frame.joint.abs().max() + 1e-4).all()


def test_log_prob_increase_of_zero_is_zero(tiny_model):
    x = torch.randn(tiny_model.cfg.d_model)
    # zero up to float32 rounding (the base row runs through a 1-row GEMM, the vectors through a 3-row one)
    assert log_prob_increase(tiny_model, x, torch.zeros(3, tiny_model.cfg.d_model), 5).abs().max() < 1e-6


def test_target_tokens(tiny_model):
    ids = target_token_ids(tiny_model, ["paris", " paris", 7])
    assert ids[0] == ids[1] == tiny_model.tokenizer.convert_tokens_to_ids("paris") and ids[2] == 7
    assert target_token_ids(tiny_model, "paris", n_prompts=3).tolist() == [int(ids[0])] * 3
    for bad in ["", "   "]:
        with pytest.raises(ValueError, match="tokenises to nothing"):
            target_token_ids(tiny_model, bad)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        target_token_ids(tiny_model, 10**9)
    with pytest.raises(ValueError, match="targets for"):
        value_scores(tiny_model, PROMPTS, ["paris"] * 3)
    with pytest.raises(ValueError, match="norm mode"):
        value_scores(tiny_model, PROMPTS, TARGETS, norm="exact")
    with pytest.raises(IndexError):
        value_scores(tiny_model, PROMPTS, TARGETS, positions=50)


@pytest.mark.real_model
def test_smollm2_frozen_top_neurons_are_late(smollm2):
    prompt, target = "The capital of France is", " Paris"
    top = top_value_neurons(smollm2, prompt, target, k=100)
    assert (top.layer.head(10) >= 17).all()
    assert (top.layer >= 17).sum() >= 95
    assert 0.8 < top.score.iloc[0] < 2.0
    # the recomputed norm instead crowns layer-0 neurons with tens of nats
    rec = value_scores(smollm2, prompt, target, layers=[0, 27], norm="recomputed")
    assert rec.top(1).layer.iloc[0] == 0 and rec.top(1).score.iloc[0] > 30


def test_top_mean_value_neurons_equals_full_sweep(tiny_model):
    prompts = PROMPTS + ["the capital of italy is"]
    targets = TARGETS + ["rome"]
    mean = value_scores(tiny_model, prompts, targets).scores.mean(0).reshape(-1)
    for count in (1, 10, 40):
        got = top_mean_value_neurons(tiny_model, prompts, targets, count, memory_budget=5 * 2 * tiny_model.cfg.d_vocab * 4)
        values = mean.topk(count).values
        d = tiny_model.cfg.d_mlp
        # same scores as the full sweep's top-count (neuron identity may differ only within exact ties)
        assert got.score.to_numpy() == pytest.approx(values.numpy(), abs=1e-6)
        chosen = torch.tensor([l * d + n for l, n in zip(got.layer, got.neuron)])
        assert len(set(chosen.tolist())) == count
        assert mean[chosen].numpy() == pytest.approx(got.score.to_numpy(), abs=1e-6)
    with pytest.raises(ValueError, match="count"):
        top_mean_value_neurons(tiny_model, prompts, targets, 0)
