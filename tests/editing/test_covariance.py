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


def test_key_dim_budget_and_the_logged_estimate(tiny_model, tiny_corpus, caplog):
    from ace_interp.editing import key_dim_budget

    d = tiny_model.cfg.d_mlp
    assert key_dim_budget(tiny_model) == 4 * d and key_dim_budget(tiny_model, 2.5) == round(2.5 * d)
    with caplog.at_level("WARNING", logger="ace_interp.editing.covariance"):
        key_dim_budget(tiny_model, 50)
    assert "outside FastMEMIT" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="ace_interp.editing.covariance"):
        second_moments(tiny_model, [1], corpus=tiny_corpus, n_tokens=2 * d, progress=False, use_cache=False)
    # the estimate is logged before the pass: tokens as a multiple of the key dimension, and the float64 sums
    assert f"{2 * d:,} tokens (2.0× the key dimension {d:,})" in caplog.text
    assert f"{d * d * 8 / 2**30:.2f} GiB of float64 sums" in caplog.text


def test_corpus_from_option(tiny_model, tmp_path, monkeypatch):
    from ace_interp.editing import corpus_from_option

    monkeypatch.setenv("ACE_INTERP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "a.txt").write_text("the capital of france is paris .\n\nberlin is in germany .\n")
    files = corpus_from_option(tiny_model, f"files:{tmp_path / 'a.txt'}")
    assert files.texts == ("the capital of france is paris .", "berlin is in germany .")
    sampled = corpus_from_option(tiny_model, "sampled", n_tokens=60, progress=False)
    assert sampled.name.startswith("sampled") and sum(len(t.split()) for t in sampled.texts) > 0
    with pytest.raises(ValueError, match="unknown covariance corpus option"):
        corpus_from_option(tiny_model, "wikipedia")
    # no network here: a `datasets` corpus that cannot be reached says so and names the alternatives
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not reachable.*files:"):
        corpus_from_option(tiny_model, "datasets:no-such-corpus-i27:default:train")


def test_statistics_are_read_once_per_process_and_follow_the_weights(tiny_model_dir, tiny_corpus, monkeypatch):
    """The in-process copy of a cache file is keyed on its content-named path: a second look-up reads no file,
    hands out a copy, and a model whose weights changed in place (not an edit) gets its own statistics."""
    from ace_interp.model import ffn_weight, load_model

    bridge = load_model(tiny_model_dir("gptj"), device="cpu")
    first = second_moments(bridge, [1], corpus=tiny_corpus, n_tokens=200, progress=False)[1]
    first.mul_(0)  # a caller writing into its matrix must not change the next caller's

    def no_read(*args, **kwargs):
        raise AssertionError("the statistics file was read again")

    monkeypatch.setattr(covariance.torch, "load", no_read)
    again = second_moments(bridge, [1], corpus=tiny_corpus, n_tokens=200, progress=False)[1]
    fresh = second_moments(bridge, [1], corpus=tiny_corpus, n_tokens=200, progress=False, use_cache=False)[1]
    torch.testing.assert_close(again, fresh)
    monkeypatch.undo()
    with torch.no_grad():
        ffn_weight(bridge, 0, "W_out").mul_(0.5)
    changed = second_moments(bridge, [1], corpus=tiny_corpus, n_tokens=200, progress=False)[1]
    recomputed = second_moments(bridge, [1], corpus=tiny_corpus, n_tokens=200, progress=False, use_cache=False)[1]
    assert not torch.allclose(changed, fresh, rtol=1e-2)
    torch.testing.assert_close(changed, recomputed)


def test_the_world_corpus_is_reread_when_its_file_changes(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "corpus_sample.txt"
    path.write_text("paris 's nation is france .\nberlin is a city in germany .\n")
    monkeypatch.setattr(covariance, "world_corpus_path", lambda bridge: path)
    first = covariance.default_corpus(tiny_model)
    assert first.texts == ("paris 's nation is france .", "berlin is a city in germany .")
    assert covariance.default_corpus(tiny_model) is first  # read once
    path.write_text("lima is a city in peru .\n")
    assert covariance.default_corpus(tiny_model).texts == ("lima is a city in peru .",)


def test_the_cache_key_is_the_model_not_the_folder_it_was_loaded_from(tiny_model_dir, tmp_path):
    """A second checkout (or a clean clone) of the same model finds the same statistics; other weights do not."""
    import shutil

    from ace_interp.model import load_model

    folder = tiny_model_dir("gptj")
    copy = shutil.copytree(folder, tmp_path / "elsewhere" / folder.name)
    here, there = load_model(folder, device="cpu"), load_model(copy, device="cpu")
    assert covariance.model_id(here) == covariance.model_id(there)
    assert covariance.model_id(here, up_to_layer=0) == covariance.model_id(there, up_to_layer=0)
    changed = load_model(copy, device="cpu")
    with torch.no_grad():
        for p in changed.original_model.parameters():
            p.mul_(1.5)
    assert covariance.model_id(changed) != covariance.model_id(here)
