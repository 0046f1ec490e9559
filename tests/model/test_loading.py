"""Loading: local folders, named models, and clear errors."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from ace_interp.model import UnsupportedModelError, available_models, load_model, model_spec
from ace_interp.model.random_init import word_level_tokenizer


def test_load_local_folder_offline(tiny_model_dir):
    bridge = load_model(tiny_model_dir("qwen3"), device="cpu", dtype=torch.float32)
    spec = model_spec(bridge)
    assert (spec.n_layers, spec.d_model, spec.d_mlp) == (3, 32, 64)
    assert not bridge.training


def test_missing_local_path_is_clear():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("./no/such/model")


def test_folder_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)


def test_unknown_hub_name_offline_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="hub is unreachable"):
        load_model("nobody-has-this/model-xyz")


def test_non_causal_lm_is_rejected(tmp_path):
    tok = word_level_tokenizer(["a", "b"])
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises((UnsupportedModelError, ValueError), match="causal"):
        load_model(tmp_path, device="cpu")


def test_named_models_listed():
    names = available_models()
    assert "smollm2-135m" in names and "toy-gptj" in names and "toy-qwen3" in names


@pytest.mark.real_model
def test_smollm2_knows_paris_and_reconstructs(smollm2):
    from ace_interp.model import ffn_output_from_neurons, neuron_activations

    spec = model_spec(smollm2)
    assert (spec.architecture, spec.n_layers, spec.d_mlp) == ("LlamaForCausalLM", 30, 1536)
    acts = neuron_activations(smollm2, "The capital of France is")
    assert smollm2.tokenizer.decode(acts.logits[0].argmax()).strip() == "Paris"
    for i in (0, 15, 29):
        rebuilt = ffn_output_from_neurons(smollm2, i, acts.coefficients[:, i])
        torch.testing.assert_close(rebuilt, acts.mlp_out[:, i], rtol=1e-4, atol=1e-4)


def test_bos_convention_follows_the_model(tiny_model_dir, tmp_path):
    """No BOS where the model's tokenizer adds none; the toys' training record keeps theirs; an override wins."""
    import json
    import shutil

    from ace_interp.model.loading import ASSETS, model_prepends_bos

    folder = tiny_model_dir("gptj")  # word-level tokenizer: adds no BOS by itself
    bridge = load_model(folder, device="cpu")
    assert not bridge.cfg.default_prepend_bos
    assert bridge.to_tokens("the capital")[0].tolist() == bridge.tokenizer.encode("the capital", add_special_tokens=False)
    assert load_model(folder, device="cpu", prepend_bos=True).to_tokens("the")[0, 0] == bridge.tokenizer.bos_token_id

    trained = tmp_path / "trained"
    shutil.copytree(folder, trained)
    (trained / "training.json").write_text(json.dumps({"config": {"world": {}}}))  # an older train_toy record
    assert model_prepends_bos(trained)
    (trained / "training.json").write_text(json.dumps({"prepend_bos": False, "config": {"world": {}}}))
    assert not model_prepends_bos(trained)
    if (ASSETS / "toy-gptj" / "training.json").exists():
        assert model_prepends_bos(ASSETS / "toy-gptj")

    from ace_interp.model import save_model

    for prepend in (True, False):  # a saved model keeps the convention it was used under
        saved = save_model(load_model(folder, device="cpu", prepend_bos=prepend), tmp_path / f"saved-{prepend}")
        assert load_model(saved, device="cpu").cfg.default_prepend_bos == prepend


def test_bos_convention_of_a_tokenizer_that_adds_bos(tiny_model_dir):
    from tokenizers import processors

    from ace_interp.model.loading import model_prepends_bos
    from ace_interp.model.random_init import _TINY_WORDS

    tok = word_level_tokenizer(_TINY_WORDS)
    assert not model_prepends_bos(tiny_model_dir("gptj"), tok)
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    assert tok("the")["input_ids"][0] == 1
    assert model_prepends_bos(tiny_model_dir("gptj"), tok)
