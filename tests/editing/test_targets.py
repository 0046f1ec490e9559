"""Target optimisation (`editing/targets.py`): the subject-position KL term does what its formula says."""

import dataclasses

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



def test_ace_value_target_is_optimised_after_the_query_write(tiny_model, fast_hparams, monkeypatch):
    """`value_target_after_query`: the shared z is optimised on the unedited model, the query group written
    towards it, and the value target optimised again on the model with exactly that write in place."""
    import ace_interp.editing.ace as ace
    from ace_interp.editing import edit
    from ace_interp.model import hf_parameters

    bridge = tiny_model
    seen = []  # the HF parameters each target optimisation ran on

    def recording(*args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in hf_parameters(bridge).items()})
        return compute_z_pmet(*args, **kwargs)

    compute_z_pmet = ace.compute_z_pmet
    monkeypatch.setattr(ace, "compute_z_pmet", recording)
    original = {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}
    hp = fast_hparams("ace", bridge, variant="ace-paper", query_layers=(0,), value_layers=(1,),
                      value_target_after_query=True)
    with edit(bridge, FRANCE, method="ace", hparams=hp):
        edited = {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}
    assert len(seen) == 2
    assert all(torch.equal(seen[0][k], original[k]) for k in original)
    changed = {k for k in original if not torch.equal(seen[1][k], original[k])}
    assert len(changed) == 1 and ".0." in next(iter(changed)), changed  # the query layer's W_out only
    written = {k for k in original if not torch.equal(edited[k], original[k])}
    assert len(written) == 2 and changed < written and ".1." in next(iter(written - changed)), written
    for k in changed:  # the final query-layer weights are the ones the value target was optimised on
        assert torch.equal(edited[k], seen[1][k])
    with pytest.raises(ValueError, match="below the value layers"):
        edit(bridge, FRANCE, method="ace", hparams=fast_hparams(
            "ace", bridge, variant="ace-paper", query_layers=(2,), value_layers=(1,), value_target_after_query=True))
    assert all(torch.equal(v, original[k]) for k, v in hf_parameters(bridge).items())
