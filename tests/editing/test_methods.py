"""Every editor changes a tiny model's prediction for the edited prompt, writes only W_out, and undoes
bit-exactly; batches and sequences of edits."""

import dataclasses

import pytest
import torch

from ace_interp.editing import HopPrompt, ImplicitSubject, edit, edit_sequentially, undo_edits
from ace_interp.editing.ace import implicit_subject_write
from ace_interp.model import apply_weight_updates, hf_parameters

from edit_cases import FRANCE, SPAIN, prediction, target_id


def _snapshot(bridge):
    return {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}


def _same(bridge, snapshot):
    now = hf_parameters(bridge)
    return all(torch.equal(snapshot[k], now[k]) for k in snapshot)


def _changed(bridge, snapshot):
    now = hf_parameters(bridge)
    return {k for k in snapshot if not torch.equal(snapshot[k], now[k])}


@pytest.mark.parametrize(
    "method,overrides",
    [("ft", {}), ("rome", {}), ("memit", {}), ("pmet", {}), ("ace", {}),
     ("pmet", {"spread_accounting": "residual"}), ("ace", {"spread_accounting": "residual"}),
     *[(m, {"context_keys": "each"}) for m in ("rome", "memit", "pmet", "ace")]],
    ids=["ft", "rome", "memit", "pmet", "ace", "pmet-residual-accounting", "ace-residual-accounting",
         "rome-keys-per-context", "memit-keys-per-context", "pmet-keys-per-context", "ace-keys-per-context"],
)
def test_method_edits_prediction_and_undoes_exactly(tiny_model, fast_hparams, method, overrides):
    bridge = tiny_model
    snapshot = _snapshot(bridge)
    grad_flags = [p.requires_grad for p in bridge.original_model.parameters()]
    assert prediction(bridge, FRANCE) != target_id(bridge, FRANCE)
    applied = edit(bridge, FRANCE, method=method, hparams=fast_hparams(method, bridge, **overrides))
    assert [p.requires_grad for p in bridge.original_model.parameters()] == grad_flags
    assert prediction(bridge, FRANCE) == target_id(bridge, FRANCE), f"{method} did not make 'tokyo' the prediction"
    changed = _changed(bridge, snapshot)
    assert changed and all(("mlp" in k) and ("c_proj" in k or "fc_out" in k or "down_proj" in k) for k in changed), changed
    assert applied.layers and applied.seconds > 0
    applied.undo()
    assert _same(bridge, snapshot)


@pytest.mark.parametrize("method", ["memit", "pmet"])
def test_batch_of_edits(tiny_model, fast_hparams, method):
    bridge = tiny_model
    snapshot = _snapshot(bridge)
    with edit(bridge, [FRANCE, SPAIN], method=method, hparams=fast_hparams(method, bridge)) as applied:
        for r in applied.requests:
            assert prediction(bridge, r) == target_id(bridge, r)
    assert _same(bridge, snapshot)


def test_sequential_edits_undo_bit_exact(tiny_model, fast_hparams):
    bridge = tiny_model
    snapshot = _snapshot(bridge)
    hp = fast_hparams("pmet", bridge)
    applied = edit_sequentially(bridge, [FRANCE, SPAIN], method="pmet", hparams=hp)
    assert [prediction(bridge, r) == target_id(bridge, r) for r in (FRANCE, SPAIN)] == [True, True]
    with pytest.raises(RuntimeError, match="not the latest"):
        applied[0].undo()
    undo_edits(applied)
    assert _same(bridge, snapshot)


def test_ace_attribution_variant_with_explicit_groups(tiny_model_dir, fast_hparams):
    from ace_interp.model import load_model

    bridge = load_model(tiny_model_dir("gptj"), device="cpu")
    snapshot = _snapshot(bridge)
    hp = fast_hparams("ace", bridge)
    hp = dataclasses.replace(hp, variant="attribution", rank_layers=False, query_layers=(0,), value_layers=(1, 2), query_target="own")
    hops = [HopPrompt(0, "the language of the capital of france", "japanese")]
    with edit(bridge, FRANCE, method="ace", hparams=hp, hop_prompts=hops) as applied:
        assert applied.info["query_layers"] == [0] and applied.info["value_layers"] == [1, 2]
        assert applied.info["n_hop_prompts"] == 1
        assert prediction(bridge, FRANCE) == target_id(bridge, FRANCE)
        assert set(applied.layers) == {0, 1, 2}
    assert _same(bridge, snapshot)


def test_unknown_method_and_wrong_hparams(tiny_model, fast_hparams):
    with pytest.raises(ValueError, match="unknown editing method"):
        edit(tiny_model, FRANCE, method="knowledge-surgery")
    with pytest.raises(TypeError, match="takes ROMEHParams"):
        edit(tiny_model, FRANCE, method="rome", hparams=fast_hparams("pmet", tiny_model))


def test_ace_attribution_variant_ranks_layers(tiny_model_dir, fast_hparams):
    from ace_interp.model import load_model

    bridge = load_model(tiny_model_dir("gpt2"), device="cpu")
    snapshot = _snapshot(bridge)
    hp = dataclasses.replace(fast_hparams("ace", bridge), variant="attribution", rank_layers=True, n_value_layers=1, n_query_layers=2)
    hops = [HopPrompt(0, "the language of the capital of france", "japanese")]
    with edit(bridge, FRANCE, method="ace", hparams=hp, hop_prompts=hops) as applied:
        ranking = applied.info["ranking"]
        assert applied.info["value_layers"] == ranking.value_layers[:1]
        assert all(l < max(applied.info["value_layers"]) for l in applied.info["query_layers"])
        assert set(applied.layers) == set(applied.info["value_layers"]) | set(applied.info["query_layers"])
        assert prediction(bridge, FRANCE) == target_id(bridge, FRANCE)
    assert _same(bridge, snapshot)


@pytest.fixture
def target_calls(monkeypatch):
    """Every target optimisation ACE runs, in order: (the HF parameters it ran on, its layer, its hop prompts)."""
    import ace_interp.editing.ace as ace

    calls = []
    compute_z_pmet = ace.compute_z_pmet

    def recording(bridge, requests, layer, *args, **kwargs):
        calls.append((_snapshot(bridge), layer, list(kwargs.get("extra_prompts", ()))))
        return compute_z_pmet(bridge, requests, layer, *args, **kwargs)

    monkeypatch.setattr(ace, "compute_z_pmet", recording)
    return calls


def _query_then_value(original, calls, edited):
    """The first target ran on the unedited model, the second on it plus exactly the final query-layer
    (layer 0) write, and the edit wrote layers 0 and 1."""
    assert len(calls) == 2
    assert all(torch.equal(calls[0][0][k], original[k]) for k in original)
    changed = {k for k in original if not torch.equal(calls[1][0][k], original[k])}
    assert len(changed) == 1 and ".0." in next(iter(changed)), changed  # the query layer's W_out only
    written = {k for k in original if not torch.equal(edited[k], original[k])}
    assert len(written) == 2 and changed < written and ".1." in next(iter(written - changed)), written
    for k in changed:  # the final query-layer weights are the ones the value target was optimised on
        assert torch.equal(edited[k], calls[1][0][k])


def test_ace_value_target_is_optimised_after_the_query_write(tiny_model, fast_hparams, target_calls):
    """`value_target_after_query`: the shared z is optimised on the unedited model, the query group written
    towards it, and the value target optimised again on the model with exactly that write in place."""
    bridge = tiny_model
    original = _snapshot(bridge)
    hp = fast_hparams("ace", bridge, variant="ace-paper", query_layers=(0,), value_layers=(1,),
                      value_target_after_query=True)
    with edit(bridge, FRANCE, method="ace", hparams=hp):
        edited = _snapshot(bridge)
    _query_then_value(original, target_calls, edited)
    assert [layer for _, layer, _ in target_calls] == [1, 1]  # the shared z's layer, twice
    with pytest.raises(ValueError, match="below the value layers"):
        edit(bridge, FRANCE, method="ace", hparams=fast_hparams(
            "ace", bridge, variant="ace-paper", query_layers=(2,), value_layers=(1,), value_target_after_query=True))
    assert _same(bridge, original)


@pytest.mark.parametrize("query_first", [False, True])
def test_ace_own_query_target_order(tiny_model_dir, fast_hparams, target_calls, query_first):
    """The attribution variant's own query target: value group first and the query target (with the hop
    prompts) on top of its write; or, with `value_target_after_query`, the query group first, its target
    (with the hop prompts) on the unedited model, then the value target on top of the query write."""
    from ace_interp.model import load_model

    bridge = load_model(tiny_model_dir("qwen3"), device="cpu")
    original = _snapshot(bridge)
    hp = fast_hparams("ace", bridge, variant="attribution", rank_layers=False, query_layers=(0,), value_layers=(1,),
                      query_target="own", value_target_after_query=query_first)
    hops = [HopPrompt(0, "the language of the capital of france", "japanese")]
    with edit(bridge, FRANCE, method="ace", hparams=hp, hop_prompts=hops) as applied:
        edited = _snapshot(bridge)
        assert prediction(bridge, FRANCE) == target_id(bridge, FRANCE)
        assert applied.info["n_hop_prompts"] == 1 and applied.info["query_z_layer"] == 0
    assert _same(bridge, original)
    layers = [layer for _, layer, _ in target_calls]
    n_hops = [len(extra) for _, _, extra in target_calls]
    if query_first:
        assert layers == [0, 1] and n_hops == [1, 0]
        _query_then_value(original, target_calls, edited)
    else:
        assert layers == [1, 0] and n_hops == [0, 1]
        assert all(torch.equal(target_calls[0][0][k], original[k]) for k in original)
        changed = {k for k in original if not torch.equal(target_calls[1][0][k], original[k])}
        assert len(changed) == 1 and ".1." in next(iter(changed)), changed  # the value write, temporarily


def test_implicit_subject_write_realises_its_phrases(tiny_model, fast_hparams):
    """The implicit-subject write alone (one key per edit, averaged over its phrases; one δ through the write)
    makes every phrase prompt predict the new answer."""
    bridge = tiny_model
    original = _snapshot(bridge)
    phrases = [ImplicitSubject(0, "the country of berlin"), ImplicitSubject(0, "the country of rome")]
    rows = [dataclasses.replace(FRANCE, subject=p.phrase) for p in phrases]
    assert all(prediction(bridge, r) != target_id(bridge, r) for r in rows)
    result = implicit_subject_write(bridge, [FRANCE], phrases, fast_hparams("ace", bridge, implicit_layers=(2,)))
    assert _same(bridge, original) and set(result.updates) == {(2, "W_out")}
    assert result.info["n_implicit_subjects"] == 2
    with apply_weight_updates(bridge, result.updates):
        assert all(prediction(bridge, r) == target_id(bridge, r) for r in rows)


def test_ace_writes_implicit_subjects_first(tiny_model, fast_hparams, target_calls):
    """With `implicit_layers` ACE optimises the implicit-subject target first, on the unedited model (the
    second phrase rides along the first one's δ), then its groups' targets with that write in place; the
    edit stores the fact and undoes bit-exactly."""
    bridge = tiny_model
    original = _snapshot(bridge)
    phrases = [ImplicitSubject(0, "the country of berlin"), ImplicitSubject(0, "the country of rome")]
    hp = fast_hparams("ace", bridge, implicit_layers=(2,))
    with edit(bridge, FRANCE, method="ace", hparams=hp, hop_prompts=phrases) as applied:
        assert applied.info["n_implicit_subjects"] == 2 and applied.info["implicit_layers"] == [2]
        assert 2 in applied.layers
        assert prediction(bridge, FRANCE) == target_id(bridge, FRANCE)
    assert _same(bridge, original)
    first_snapshot, first_layer, first_extra = target_calls[0]
    assert first_layer == 2 and len(first_extra) == 1
    assert all(torch.equal(first_snapshot[k], original[k]) for k in original)
    assert len(target_calls) > 1
    assert all(any(not torch.equal(s[k], original[k]) for k in original) for s, _, _ in target_calls[1:])


def test_ace_ignores_implicit_subjects_without_implicit_layers(tiny_model, fast_hparams):
    bridge = tiny_model
    hp = fast_hparams("ace", bridge)
    with edit(bridge, FRANCE, method="ace", hparams=hp):
        plain = _snapshot(bridge)
    with edit(bridge, FRANCE, method="ace", hparams=hp, hop_prompts=[ImplicitSubject(0, "the country of berlin")]):
        with_phrases = _snapshot(bridge)
    assert all(torch.equal(plain[k], with_phrases[k]) for k in plain)


@pytest.mark.parametrize("bad,match", [(ImplicitSubject(1, "the country of berlin"), "refers to request 1"),
                                       (ImplicitSubject(0, "  "), "empty phrase")])
def test_ace_bad_implicit_subject_raises_and_writes_nothing(tiny_model, fast_hparams, bad, match):
    bridge = tiny_model
    original = _snapshot(bridge)
    with pytest.raises(ValueError, match=match):
        edit(bridge, FRANCE, method="ace", hparams=fast_hparams("ace", bridge, implicit_layers=(2,)), hop_prompts=[bad])
    assert _same(bridge, original)


@pytest.mark.parametrize("method", ["rome", "memit", "pmet", "ace"])
def test_reference_preset_edits_records_its_preset_and_undoes_exactly(tiny_model, tiny_corpus, method):
    """`preset="reference"` runs (one request per optimisation, one stop reason each) and is recorded on the edit."""
    from ace_interp.editing import default_hparams

    bridge = tiny_model
    snapshot = _snapshot(bridge)
    budget = {"target.context_lengths": ((4, 1),), "covariance.corpus": tiny_corpus, "covariance.n_tokens": 1000,
              "covariance.progress": False}
    hp = default_hparams(method, bridge, "reference", **budget)
    applied = edit(bridge, [FRANCE, SPAIN], method=method, hparams=hp)
    assert applied.preset == "custom"  # hyper-parameters passed in: recorded as such
    if method != "ace":
        assert len(applied.info["n_evals"]) == 2 and len(applied.info["stop_reasons"]) == 2
        assert all(1 <= n <= hp.target.v_num_grad_steps for n in applied.info["n_evals"])
    assert _changed(bridge, snapshot)
    applied.undo()
    assert _same(bridge, snapshot)
    with pytest.raises(ValueError, match="either hparams or preset"):
        edit(bridge, FRANCE, method=method, hparams=hp, preset="reference")
    assert _same(bridge, snapshot)


def test_edit_records_the_preset_it_was_given(tiny_model, monkeypatch, tiny_corpus):
    import ace_interp.editing as editing

    original = editing.default_hparams

    def small(method, bridge, preset=None, **overrides):  # the named preset, on a tiny budget
        return original(method, bridge, preset, **{"covariance.corpus": tiny_corpus, "covariance.n_tokens": 1000,
                                                   "covariance.progress": False, "target.context_lengths": ()})

    monkeypatch.setattr(editing, "default_hparams", small)
    for preset, expected in ((None, "tuned"), ("tuned", "tuned"), ("reference", "reference")):
        applied = edit(tiny_model, FRANCE, method="memit", preset=preset)
        assert applied.preset == expected and applied.hparams.target.stop_on == ("loss" if expected == "reference" else "nll")
        applied.undo()
