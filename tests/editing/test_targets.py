"""Target optimisation (`editing/targets.py`): the subject-position KL term does what its formula says."""

import pytest
import torch

from ace_interp.editing import EditRequest
from ace_interp.editing.hparams import TargetHParams
from ace_interp.editing.keys import build_batch
from ace_interp.editing.targets import compute_targets

from edit_cases import FRANCE, SPAIN

LAYER = 1
# Subjects that open the prompt, so the NLL is read at a later position than the subject's: the subject KL
# then asks δ for something the NLL does not forbid (with FRANCE's "the capital of {}" the subject's own
# position is the one that must predict the new answer, and the two terms would simply trade off)
OPENING = [EditRequest("{} is a country where people speak", "spain", "japanese"),
           EditRequest("{} is the capital city of", "paris", "japan")]


def _kl_at_subject(bridge, request, delta):
    """KL(p_δ ‖ p_0) of the next token at the subject's last token of "{s} is a", with δ added to block
    LAYER's FFN output there: the quantity `subject_kl_factor` weighs, computed by a plain hooked forward."""
    b = build_batch(bridge, [EditRequest("{} is a", request.subject, request.target_new)], ("",))
    n, pos = int(b.lengths[0]), int(b.lookup[0])
    tokens = b.tokens[:1, :n]

    def add_delta(x, hook):
        x = x.clone()
        x[0, pos] += delta.to(x.dtype)
        return x

    with torch.no_grad():
        p0 = bridge(tokens)[0, pos].log_softmax(-1)
        p1 = bridge.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{LAYER}.hook_mlp_out", add_delta)])
        p1 = p1[0, pos].log_softmax(-1)
    return float((p1.exp() * (p1 - p0)).sum())


def _hp(subject_kl_factor):
    return TargetHParams(v_num_grad_steps=15, v_lr=0.1, v_weight_decay=1e-3, decay_power=1, clamp_norm_factor=1000.0,
                         kl_factor=0.0, subject_kl_factor=subject_kl_factor, early_stop_loss=0.0)


def test_subject_kl_keeps_the_prediction_after_the_subject(tiny_model):
    requests = OPENING
    free = compute_targets(tiny_model, requests, LAYER, _hp(0.0), ("",), sites=("mlp",))
    kept = compute_targets(tiny_model, requests, LAYER, _hp(100.0), ("",), sites=("mlp",))
    for i, r in enumerate(requests):
        kl_free = _kl_at_subject(tiny_model, r, free.deltas["mlp"][i])
        kl_kept = _kl_at_subject(tiny_model, r, kept.deltas["mlp"][i])
        assert kl_free > 1e-3, kl_free  # the unconstrained δ does move it
        assert kl_kept < 0.5 * kl_free, (r.subject, kl_kept, kl_free)


@pytest.mark.parametrize("factors", [(0.0625, 0.0), (0.0, 1.0), (0.0625, 1.0)])
def test_kl_terms_on_suffixes_match_full_rows(tiny_model, factors):
    """Both KL positions (the prompt's last token, the subject's) are indexed right on the suffix fast path."""
    kl_factor, subject_kl_factor = factors
    hp = TargetHParams(v_num_grad_steps=4, v_lr=0.1, v_weight_decay=1e-3, decay_power=1, clamp_norm_factor=1000.0,
                       kl_factor=kl_factor, subject_kl_factor=subject_kl_factor)
    fast = compute_targets(tiny_model, [FRANCE, SPAIN], LAYER, hp, ("",), sites=("mlp",))
    slow = compute_targets(tiny_model, [FRANCE, SPAIN], LAYER, hp, ("",), sites=("mlp",), suffix_only=False)
    torch.testing.assert_close(torch.tensor(fast.losses), torch.tensor(slow.losses), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.targets["mlp"], slow.targets["mlp"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("steps, updates", [(0, 0), (1, 0), (3, 2)])
def test_steps_are_forwards_and_one_fewer_updates(tiny_model, steps, updates):
    """As the reference's loop: N steps are N forward passes and N - 1 Adam updates, so 0 and 1 leave δ = 0
    (the target is z_0) and 3 move it."""
    hp = TargetHParams(v_num_grad_steps=steps, v_lr=0.1, v_weight_decay=1e-3, decay_power=1, clamp_norm_factor=1000.0,
                       early_stop_loss=0.0)
    res = compute_targets(tiny_model, [FRANCE], LAYER, hp, ("",), sites=("mlp",))
    assert len(res.losses) == max(1, steps)
    moved = bool(res.deltas["mlp"].abs().max() > 0)
    assert moved == (updates > 0)
    if not moved:
        assert torch.equal(res.targets["mlp"], res.initial["mlp"])
