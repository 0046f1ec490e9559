"""Key statistics: E[kkᵀ] equals the mean outer product of the corpus keys, cached on disk by model,
layer, corpus and sample count."""

import pytest
import torch

from ace_interp.editing import covariance
from ace_interp.editing.covariance import TextCorpus, corpus_keys, second_moments, stats_dir


def test_second_moment_is_mean_outer_product_and_cached(tiny_model, tiny_corpus, monkeypatch):
    bridge = tiny_model
    moments = second_moments(bridge, [0, 2], corpus=tiny_corpus, n_tokens=300, progress=False)
    keys = corpus_keys(bridge, 2, tiny_corpus, n_tokens=300)
    assert keys.shape == (300, bridge.cfg.d_mlp)
    torch.testing.assert_close(moments[2], keys.T @ keys / 300, rtol=1e-4, atol=1e-7)
    folder = stats_dir(bridge, tiny_corpus)
    assert (folder / "layer0_n300.pt").exists() and (folder / "layer2_n300.pt").exists()

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
