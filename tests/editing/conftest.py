"""Fixtures for the editing tests: an isolated statistics cache, a small corpus in the tiny vocabulary,
and hyper-parameters that keep each edit of a tiny model to a few seconds."""

import dataclasses
import random

import pytest

from ace_interp.editing import TextCorpus, default_hparams
from ace_interp.model.random_init import _TINY_WORDS


@pytest.fixture(autouse=True)
def isolated_cache(request, tmp_path, monkeypatch):
    """Statistics go to a temporary cache, except for real-model tests (which reuse the user cache where
    the converted model and its covariance live)."""
    if request.node.get_closest_marker("real_model"):
        return None
    monkeypatch.setenv("ACE_INTERP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def tiny_corpus() -> TextCorpus:
    rng = random.Random(0)
    words = [w for w in _TINY_WORDS if w not in (":", ".")]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 20))) + " ." for _ in range(150)]
    return TextCorpus.from_texts("tiny-words", texts)


@pytest.fixture
def fast_hparams(tiny_corpus):
    """hparams(method, bridge, **overrides): defaults with the tiny corpus, one context prefix, 25 steps
    (`context_keys=` sets the covariance's field of that name)."""

    def make(method, bridge, context_keys=None, **overrides):
        hp = default_hparams(method, bridge)
        hp = dataclasses.replace(
            hp, target=dataclasses.replace(hp.target, n_context=1, context_length=4, v_num_grad_steps=25)
        )
        if hasattr(hp, "covariance"):
            hp = dataclasses.replace(
                hp, covariance=dataclasses.replace(hp.covariance, corpus=tiny_corpus, n_tokens=1000, progress=False,
                                                   context_keys=context_keys or hp.covariance.context_keys)
            )
        return dataclasses.replace(hp, **overrides) if overrides else hp

    return make
