"""ACE's release also writes the attention output projection (`ACEHParams.write_attention`): applied to W_O and
W_out of every group layer only, moving the attention output towards the joint target, undone bit-exactly."""

import dataclasses

import pytest
import torch

from ace_interp.editing import edit, override_hparams, sampled_contexts
from ace_interp.editing.covariance import corpus_keys, second_moments
from ace_interp.editing.keys import outputs_at_subject
from ace_interp.editing.targets import compute_z_pmet
from ace_interp.model import hf_parameters, load_model

from edit_cases import FRANCE


def _release_layout(fast_hparams, bridge, **overrides):
    """The reference preset's ACE (release layout) with the tests' small budget, groups [0] and [1, 2]."""
    hp = fast_hparams("ace", bridge)
    layout = dict(variant="ace-paper", query_layers=(0,), value_layers=(1, 2), joint_attention=True,
                  spread_accounting="ffn", value_target_after_query=False, write_attention=True)
    hp = override_hparams(hp, **{**layout, **overrides})
    return dataclasses.replace(hp, target=dataclasses.replace(hp.target, v_num_grad_steps=10, through_write=False))


@pytest.mark.parametrize("arch, out_name", [("gptj", "attn.out_proj"), ("qwen3", "self_attn.o_proj")])
def test_attention_write_applies_to_w_o_and_w_out_moves_attention_and_undoes_exactly(tiny_model_dir, fast_hparams,
                                                                                      arch, out_name):
    bridge = load_model(tiny_model_dir(arch), device="cpu")
    hp = _release_layout(fast_hparams, bridge)
    before = {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}
    with torch.no_grad():
        attn_before = outputs_at_subject(bridge, [FRANCE], 2, "attn")
    contexts = sampled_contexts(bridge, hp.target)  # what `edit` optimises over
    z_attn = compute_z_pmet(bridge, [FRANCE], 2, hp.target, contexts, joint_attention=True).targets["attn"]
    applied = edit(bridge, FRANCE, method="ace", hparams=hp, verify=None)
    changed = {k for k, v in hf_parameters(bridge).items() if not torch.equal(v, before[k])}
    written = {f"{l}.{out_name}" for l in (0, 1, 2)}
    assert {k for k in changed if "attn" in k} == {k for k in before if any(f".{w}." in f".{k}" for w in written)}
    assert changed and all(("attn" in k and k.endswith("proj.weight")) or ("mlp" in k) for k in changed), changed
    assert applied.layers == [0, 1, 2]
    with torch.no_grad():
        attn_after = outputs_at_subject(bridge, [FRANCE], 2, "attn")
    # the W_O writes move layer 2's attention output at the subject towards the joint optimisation's target
    assert (attn_after - z_attn).norm() < 0.5 * (attn_before - z_attn).norm()
    applied.undo()
    assert all(torch.equal(v, before[k]) for k, v in hf_parameters(bridge).items())


def test_without_attention_write_w_o_stays(tiny_model_dir, fast_hparams):
    bridge = load_model(tiny_model_dir("gptj"), device="cpu")
    before = {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}
    with edit(bridge, FRANCE, method="ace", hparams=_release_layout(fast_hparams, bridge, write_attention=False), verify=None):
        assert all(torch.equal(v, before[k]) for k, v in hf_parameters(bridge).items() if "attn" in k)


def test_attention_write_refuses_other_layouts_and_gpt2(tiny_model_dir, fast_hparams):
    bridge = load_model(tiny_model_dir("gptj"), device="cpu")
    before = {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}
    with pytest.raises(ValueError, match="write_attention is the release's layout"):
        edit(bridge, FRANCE, method="ace", hparams=_release_layout(fast_hparams, bridge, variant="attribution"))
    assert all(torch.equal(v, before[k]) for k, v in hf_parameters(bridge).items())
    gpt2 = load_model(tiny_model_dir("gpt2"), device="cpu")
    before = {k: v.detach().clone() for k, v in hf_parameters(gpt2).items()}
    with pytest.raises(ValueError, match="no Linear attention output projection"):
        edit(gpt2, FRANCE, method="ace", hparams=_release_layout(fast_hparams, gpt2))
    assert all(torch.equal(v, before[k]) for k, v in hf_parameters(gpt2).items())


@pytest.mark.parametrize("arch", ["gptj", "qwen3"])
def test_attention_key_statistics_are_the_heads_concatenated_outputs(tiny_model_dir, tiny_corpus, arch):
    bridge = load_model(tiny_model_dir(arch), device="cpu")
    keys = corpus_keys(bridge, 1, tiny_corpus, n_tokens=40, site="attn")
    moments = second_moments(bridge, [1], corpus=tiny_corpus, n_tokens=40, progress=False, site="attn")[1]
    torch.testing.assert_close(moments, keys.T @ keys / 40, rtol=1e-4, atol=1e-7)
    # independently: TransformerLens's hook_z of the first corpus text (heads' outputs before W_O), BOS dropped
    text = tiny_corpus.texts[0]
    _, cache = bridge.run_with_cache(text)
    z = cache["blocks.1.attn.hook_z"][0]
    z = z.reshape(z.shape[0], -1)
    bos = int(bridge.to_tokens(text)[0, 0]) == bridge.tokenizer.bos_token_id
    torch.testing.assert_close(keys[: z.shape[0] - bos], z[bos:], rtol=1e-5, atol=1e-6)
