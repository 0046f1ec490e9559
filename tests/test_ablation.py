"""Ablation hooks change exactly the chosen neurons; experiments produce the documented tables."""

import pytest
import torch

from ace_interp.ablation import (
    ablate_neurons,
    answer_log_probs,
    mean_activations,
    query_knockout_experiment,
    sparse_key_ablation,
    value_ablation_experiment,
    value_ablation_outcomes,
    vocabulary_rank,
)
from ace_interp.attribution import target_token_ids
from ace_interp.attribution.value import top_value_neurons
from ace_interp.model import neuron_activations, tokenize_prompts
from ace_interp.model.architecture import final_norm_module, unembed_module

PROMPTS = ["the capital of france is", "the language of spain is spanish and", "the city of tokyo is in"]
TARGETS = ["paris", "the", "japan"]


def all_coefficients(bridge, prompts):
    tokens, _ = tokenize_prompts(bridge, prompts)
    names = {f"blocks.{l}.mlp.hook_post" for l in range(bridge.cfg.n_layers)}
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    return logits, [cache[f"blocks.{l}.mlp.hook_post"] for l in range(bridge.cfg.n_layers)]


def test_zero_ablation_changes_exactly_the_chosen_neurons(tiny_model):
    bridge = tiny_model
    chosen = [0, 5, 7]
    base_logits, base = all_coefficients(bridge, PROMPTS)
    with ablate_neurons(bridge, {1: chosen}):
        logits, ablated = all_coefficients(bridge, PROMPTS)
    assert torch.equal(ablated[0], base[0])  # earlier layer untouched
    others = [k for k in range(bridge.cfg.d_mlp) if k not in chosen]
    assert torch.equal(ablated[1][..., others], base[1][..., others])  # same layer, other neurons untouched
    assert (ablated[1][..., chosen] == 0).all() and (base[1][..., chosen] != 0).any()
    assert not torch.allclose(logits, base_logits)
    after_logits, after = all_coefficients(bridge, PROMPTS)  # hooks gone on exit
    assert torch.equal(after_logits, base_logits) and torch.equal(after[1], base[1])


def test_zero_ablation_equals_zeroing_the_sub_values(tiny_model):
    """Reference without hooks: zero fc2 rows of the chosen neurons in the weights, then restore."""
    bridge = tiny_model
    neurons = {0: [1, 2, 3], 2: [10, 4]}
    tokens, _ = tokenize_prompts(bridge, PROMPTS)
    with torch.no_grad(), ablate_neurons(bridge, neurons):
        hooked = bridge(tokens)
    from ace_interp.model import sub_values

    with torch.no_grad():
        saved = {l: sub_values(bridge, l)[ks].clone() for l, ks in neurons.items()}
        try:
            for l, ks in neurons.items():
                sub_values(bridge, l)[ks] = 0.0
            reference = bridge(tokens)
        finally:
            for l, ks in neurons.items():
                sub_values(bridge, l)[ks] = saved[l]
    torch.testing.assert_close(hooked, reference, atol=1e-5, rtol=1e-5)


def test_mean_ablation_and_positions(tiny_model):
    bridge = tiny_model
    means = mean_activations(bridge, PROMPTS)
    _, base = all_coefficients(bridge, PROMPTS)
    tokens, lengths = tokenize_prompts(bridge, PROMPTS)
    mask = torch.arange(tokens.shape[1])[None] < lengths[:, None]
    torch.testing.assert_close(means[2], base[2][mask].mean(0))
    with ablate_neurons(bridge, {2: [3, 9]}, mode="mean", mean_values=means):
        _, ablated = all_coefficients(bridge, PROMPTS)
    assert torch.equal(ablated[2][..., [3, 9]], means[2, [3, 9]].expand_as(ablated[2][..., [3, 9]]))
    with ablate_neurons(bridge, {2: [3]}, mode="mean", mean_values={2: means[2]}, positions=[1]):
        _, only_pos1 = all_coefficients(bridge, PROMPTS)
    changed = (only_pos1[2] != base[2]).nonzero().tolist()
    assert changed and all(p == 1 and k == 3 for _, p, k in changed)


def test_hooks_act_on_the_wrapped_hf_model_and_are_removed_after_errors(tiny_model):
    bridge = tiny_model
    tokens, _ = tokenize_prompts(bridge, PROMPTS[:1])
    with torch.no_grad():
        base = bridge.original_model(tokens).logits
        with ablate_neurons(bridge, {0: list(range(bridge.cfg.d_mlp))}):
            hf = bridge.original_model(tokens).logits
            tl = bridge(tokens)
        torch.testing.assert_close(hf, tl, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(hf, base)
        with pytest.raises(RuntimeError, match="boom"):
            with ablate_neurons(bridge, {0: [1]}):
                raise RuntimeError("boom")
        assert torch.equal(bridge.original_model(tokens).logits, base)


def test_bad_input(tiny_model):
    with pytest.raises(IndexError, match="neuron ids"):
        with ablate_neurons(tiny_model, {0: [tiny_model.cfg.d_mlp]}):
            pass
    with pytest.raises(IndexError, match="layer"):
        with ablate_neurons(tiny_model, {99: [0]}):
            pass
    with pytest.raises(ValueError, match="mode"):
        with ablate_neurons(tiny_model, {0: [0]}, mode="resample"):
            pass
    with pytest.raises(ValueError, match="mean_values"):
        with ablate_neurons(tiny_model, {0: [0]}, mode="mean"):
            pass
    with pytest.raises(ValueError, match="shape"):
        with ablate_neurons(tiny_model, {0: [0]}, mode="mean", mean_values=torch.zeros(3)):
            pass


def test_answer_log_probs(tiny_model):
    res = answer_log_probs(tiny_model, PROMPTS, TARGETS)
    tokens, lengths = tokenize_prompts(tiny_model, PROMPTS)
    with torch.no_grad():
        logits = tiny_model(tokens)
    ids = target_token_ids(tiny_model, TARGETS)
    for b in range(3):
        lp = logits[b, lengths[b] - 1].log_softmax(-1)
        assert res.log_prob[b] == pytest.approx(float(lp[ids[b]]), abs=1e-5)
        assert res.correct[b] == (int(lp.argmax()) == int(ids[b]))


def test_value_ablation_experiment(tiny_model):
    frame = value_ablation_experiment(tiny_model, PROMPTS, TARGETS, ["a", "b", "a"], fraction=0.05, seeds=(0, 1))
    assert set(frame.relation) == {"a", "b"}
    assert list(frame[frame.relation == "a"].condition) == ["baseline", "top", "random", "random"]
    count = round(0.05 * tiny_model.cfg.n_layers * tiny_model.cfg.d_mlp)
    assert (frame[frame.condition != "baseline"].n_neurons == count).all()
    base = frame[frame.condition == "baseline"].set_index("relation").accuracy
    assert (frame.accuracy_drop == frame.relation.map(base) - frame.accuracy).all()
    # removing the neurons that raise the answer most lowers its log-prob more than random removal
    top = frame[frame.condition == "top"].mean_log_prob.mean()
    rnd = frame[frame.condition == "random"].mean_log_prob.mean()
    bl = frame[frame.condition == "baseline"].mean_log_prob.mean()
    assert top < bl and top < rnd


def test_value_ablation_outcomes_are_per_prompt_and_aggregate_to_the_experiment(tiny_model):
    relations = ["a", "b", "a"]
    rows = value_ablation_outcomes(tiny_model, PROMPTS, TARGETS, relations, fraction=0.05, seeds=(0, 1))
    assert len(rows) == len(PROMPTS) * 4  # baseline, top, two random sets
    assert sorted(rows[rows.condition == "top"].prompt) == [0, 1, 2]
    # a random set's per-prompt outcome is that prompt alone with the same neurons zeroed by hand
    n_total = tiny_model.cfg.n_layers * tiny_model.cfg.d_mlp
    count = round(0.05 * n_total)
    flat = torch.randperm(n_total, generator=torch.Generator().manual_seed(1))[:count]
    neurons = {}
    for i in flat.tolist():
        neurons.setdefault(i // tiny_model.cfg.d_mlp, []).append(i % tiny_model.cfg.d_mlp)
    with ablate_neurons(tiny_model, neurons):
        alone = answer_log_probs(tiny_model, [PROMPTS[1]], [TARGETS[1]])
    row = rows[(rows.condition == "random") & (rows.seed == 1) & (rows.prompt == 1)]
    assert float(row.log_prob.iloc[0]) == pytest.approx(float(alone.log_prob[0]), abs=1e-5)
    assert bool(row.correct.iloc[0]) == bool(alone.correct[0])
    base = answer_log_probs(tiny_model, PROMPTS, TARGETS)
    baseline_rows = rows[rows.condition == "baseline"].set_index("prompt").sort_index()
    assert baseline_rows.log_prob.tolist() == pytest.approx(base.log_prob.tolist(), abs=1e-6)
    # the experiment's table is these rows' means per relation and condition
    frame = value_ablation_experiment(tiny_model, PROMPTS, TARGETS, relations, fraction=0.05, seeds=(0, 1))
    again = value_ablation_experiment(tiny_model, PROMPTS, TARGETS, outcomes=rows)
    assert again.drop(columns="seed").equals(frame.drop(columns="seed"))
    top_a = rows[(rows.condition == "top") & (rows.relation == "a")]
    assert float(frame[(frame.relation == "a") & (frame.condition == "top")].mean_log_prob.iloc[0]) == pytest.approx(
        top_a.log_prob.mean(), abs=1e-6)


def test_value_ablation_per_prompt_scope_ablates_each_prompts_own_top_neurons(tiny_model):
    frame = value_ablation_experiment(tiny_model, PROMPTS, TARGETS, ["a", "b", "a"], fraction=0.05, seeds=(0,),
                                      scope="prompt", positions=[-1, -2, -1])
    count = round(0.05 * tiny_model.cfg.n_layers * tiny_model.cfg.d_mlp)
    # reference: one prompt at a time, its own top `count` neurons zeroed, no other prompt's
    for relation, ids in (("a", [0, 2]), ("b", [1])):
        log_probs = []
        for i in ids:
            pos = [[-1, -2, -1][i]]
            top = top_value_neurons(tiny_model, [PROMPTS[i]], [TARGETS[i]], count, pos)
            neurons = {}
            for l, n in zip(top.layer.tolist(), top.neuron.tolist()):
                neurons.setdefault(l, []).append(n)
            with ablate_neurons(tiny_model, neurons):
                log_probs.append(float(answer_log_probs(tiny_model, [PROMPTS[i]], [TARGETS[i]], pos).log_prob[0]))
        row = frame[(frame.relation == relation) & (frame.condition == "top")]
        assert float(row.mean_log_prob.iloc[0]) == pytest.approx(sum(log_probs) / len(log_probs), abs=1e-5)
    with pytest.raises(ValueError, match="scope"):
        value_ablation_experiment(tiny_model, PROMPTS, TARGETS, scope="layer")


def test_query_knockout_experiment(tiny_model):
    res = query_knockout_experiment(tiny_model, PROMPTS, TARGETS, layer=0, n_neurons=5, threshold=1e-3, n_value_neurons=20)
    assert len(res.neurons) == 5 and res.layer == 0
    assert list(res.per_prompt.columns) == [
        "prompt", "correct_before", "correct_after", "log_prob_before", "log_prob_after",
        "n_active_before", "n_active_after",
    ]
    # n_active_before equals a direct count over the full value sweep of layers 1..L-1
    from ace_interp.attribution import value_scores

    vs = value_scores(tiny_model, PROMPTS, TARGETS, layers=list(range(1, tiny_model.cfg.n_layers)))
    assert res.per_prompt.n_active_before.tolist() == (vs.scores > 1e-3).sum((1, 2)).tolist()
    with ablate_neurons(tiny_model, {0: res.neurons}):
        vs_after = value_scores(tiny_model, PROMPTS, TARGETS, layers=list(range(1, tiny_model.cfg.n_layers)))
    assert res.per_prompt.n_active_after.tolist() == (vs_after.scores > 1e-3).sum((1, 2)).tolist()
    assert res.summary["mean_active_before"] == pytest.approx(res.per_prompt.n_active_before.mean())
    assert res.summary["mean_log_prob_after"] == pytest.approx(res.per_prompt.log_prob_after.mean())


def test_query_knockout_of_explicit_neurons(tiny_model):
    """A control set given by the caller is knocked out as given, measured like the top set."""
    chosen = [7, 1, 4]
    res = query_knockout_experiment(tiny_model, PROMPTS, TARGETS, layer=1, threshold=1e-3, neurons=chosen)
    assert res.neurons == chosen and res.layer == 1
    with ablate_neurons(tiny_model, {1: chosen}):
        direct = answer_log_probs(tiny_model, PROMPTS, TARGETS)
    assert res.per_prompt.log_prob_after.tolist() == pytest.approx(direct.log_prob.tolist(), abs=1e-6)
    assert res.per_prompt.log_prob_after.tolist() != pytest.approx(res.per_prompt.log_prob_before.tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="not in layer 1"):
        query_knockout_experiment(tiny_model, PROMPTS, TARGETS, layer=1, neurons=[0, tiny_model.cfg.d_mlp])


def test_vocabulary_rank_brute_force(tiny_model):
    bridge = tiny_model
    norm, head = final_norm_module(bridge), unembed_module(bridge)
    pairs, target = [(0, 3), (2, 7)], 9
    ranks = vocabulary_rank(bridge, pairs, target, signs=[1.0, -1.0])
    with torch.no_grad():
        for (l, k), sign, rank in zip(pairs, [1.0, -1.0], ranks):
            v = sign * bridge.W_out[l, k]
            if isinstance(norm, torch.nn.LayerNorm):
                v = v - v.mean()
            logits = head.weight @ (norm.weight * v)
            assert rank == 1 + int((logits > logits[target]).sum())


def test_sparse_key_ablation(tiny_model):
    frame = sparse_key_ablation(tiny_model, PROMPTS, TARGETS, k=3, vocab_top=20, n_candidates=40)
    assert len(frame) == 2 * len(PROMPTS)
    assert set(frame.set) == {"interpretable", "score"}
    assert (frame[frame.set == "score"].n_neurons == 3).all()
    assert (frame.n_neurons <= 3).all()
    assert (frame.log_prob_drop == frame.log_prob_before - frame.log_prob_after).all()
