"""Key statistics: E[kkᵀ] equals the mean outer product of the corpus keys, cached on disk by model,
layer, corpus and sample count."""

import pytest
import torch

from ace_interp.editing import covariance
from ace_interp.editing.covariance import TextCorpus, corpus_keys, second_moments, stats_path


def test_second_moment_is_mean_outer_product_and_cached(tiny_model, tiny_corpus, monkeypatch):
    bridge = tiny_model
    moments = second_moments(bridge, [0, 2], corpus=tiny_corpus, n_tokens=300, progress=False)
    keys = corpus_keys(bridge, 2, tiny_corpus, n_tokens=300)
    assert keys.shape == (300, bridge.cfg.d_mlp)
    torch.testing.assert_close(moments[2], keys.T @ keys / 300, rtol=1e-4, atol=1e-7)
    assert stats_path(bridge, tiny_corpus, 0, 300, 128).exists() and stats_path(bridge, tiny_corpus, 2, 300, 128).exists()

    def no_recompute(*args, **kwargs):
        raise AssertionError("statistics were recomputed instead of read from the cache")

    monkeypatch.setattr(covariance, "_collect", no_recompute)
    again = second_moments(bridge, [2], corpus=tiny_corpus, n_tokens=300, progress=False)
    assert torch.equal(again[2], moments[2])
    with pytest.raises(AssertionError, match="recomputed"):  # another sample count is another entry
        second_moments(bridge, [2], corpus=tiny_corpus, n_tokens=200, progress=False)


def test_corpus_identity(tmp_path):
    (tmp_path / "a.txt").write_text("the capital of france is paris .\n\nberlin is in germany .\n")
    corpus = TextCorpus.from_files([tmp_path / "a.txt"])
    assert corpus.texts == ("the capital of france is paris .", "berlin is in germany .")
    other = TextCorpus.from_texts(corpus.name, corpus.texts[:1])
    assert corpus.cache_id != other.cache_id
    with pytest.raises(ValueError, match="no text"):
        TextCorpus.from_texts("empty", ["  "])


def test_a_different_model_saved_over_the_same_folder_gets_its_own_statistics(tiny_model_dir, tiny_corpus, tmp_path):
    """Issue 26: the cache keyed on a weight slice served the old model's statistics to a new one."""
    from ace_interp.model import ffn_weight, hf_parameters, load_model, save_model

    folder = tmp_path / "model"
    first = load_model(tiny_model_dir("gptj"), device="cpu")
    save_model(first, folder)
    first = load_model(folder, device="cpu")
    old = second_moments(first, [1], corpus=tiny_corpus, n_tokens=300, progress=False)[1]
    with torch.no_grad():  # another model: attention ×1.5, layer-0 W_out ×0.5
        for name, p in hf_parameters(first).items():
            if ".attn." in name and name.endswith("weight"):
                p.mul_(1.5)
        ffn_weight(first, 0, "W_out").mul_(0.5)
    save_model(first, folder)
    second = load_model(folder, device="cpu")
    served = second_moments(second, [1], corpus=tiny_corpus, n_tokens=300, progress=False)[1]
    fresh = second_moments(second, [1], corpus=tiny_corpus, n_tokens=300, progress=False, use_cache=False)[1]
    assert not torch.allclose(old, fresh, rtol=1e-2)
    torch.testing.assert_close(served, fresh)
