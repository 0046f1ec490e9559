"""Answer checking: normalisation and alias matching, batched KV-cache generation against a recompute
loop, target ranks/probabilities against a one-prompt bridge forward, and SmolLM2 sanity checks."""

import pytest
import torch

from ace_interp.evaluation.answers import (
    answer_matches,
    answer_text,
    check_answers,
    cot_final_answer,
    generate_greedy,
    next_token_answers,
    normalize_answer,
    plain_hf_model,
    target_scores,
    target_token_ids,
)
from ace_interp.model.architecture import hf_model


@pytest.mark.parametrize(
    "text, normal",
    [
        ("The  Eiffel-Tower.", "eiffel-tower"),
        ("São Paulo", "sao paulo"),
        ("U.S.", "us"),
        ("Washington, D.C.", "washington dc"),
        ("McDonald's!", "mcdonald's"),
        ("  an apple ", "apple"),
        ("Theatre", "theatre"),
    ],
)
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


@pytest.mark.parametrize(
    "generation, answers, ok",
    [
        (" Paris.\n\nThe capital", ["Paris"], True),
        (" paris, the city of light", ["Paris"], True),
        (" Parisian cuisine", ["Paris"], False),
        (" Indian Rupees\nQ:", ["Indian rupee"], True),
        (" the United States of America", ["United States", "USA"], True),
        (" the USA", ["United States", "USA"], True),
        (" Sao Paulo", ["São Paulo"], True),
        (" Rome", ["Paris", "City of Light"], False),
        ("\n\n Berlin", ["Berlin"], True),  # leading blank lines are skipped
        ("", ["Paris"], False),
        (" Paris", [""], False),
        (" Lyon. Paris", ["Paris"], False),  # only the start of the answer counts
    ],
)
def test_answer_matches(generation, answers, ok):
    assert answer_matches(generation, answers) is ok


def test_answer_extraction():
    assert answer_text("\n Paris\nQ: next") == "Paris"
    gen = " The Eiffel Tower is in France. The capital of France is Paris. So the answer is Paris.\nQ: What"
    assert cot_final_answer(gen) == "Paris"
    assert cot_final_answer(" So the answer is: Washington, D.C.\n") == "Washington, D.C"
    assert answer_matches(cot_final_answer(" So the answer is: Washington, D.C.\n"), ["Washington, D.C."])
    assert cot_final_answer(" I think Paris.\nQ: So the answer is Rome.") == ""


def _reference_greedy(bridge, prompt, n):
    """One prompt, no cache, through the bridge itself: the obviously-correct reference."""
    tokens = bridge.to_tokens(prompt)
    start = tokens.shape[1]
    with torch.no_grad():
        for _ in range(n):
            nxt = bridge(tokens)[0, -1].argmax()
            tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
    return tokens[0, start:].tolist()


def test_batched_cached_generation_matches_bridge_reference(tiny_model):
    prompts = ["the capital of france is", "tokyo", "which country speaks german and the", "q : paris"]
    got = generate_greedy(tiny_model, prompts, max_new_tokens=5, batch_size=3, stop_at_newline=False)
    tok = tiny_model.tokenizer
    want = [tok.decode(_reference_greedy(tiny_model, p, 5), skip_special_tokens=True) for p in prompts]
    assert got == want


def test_next_token_answers_are_the_bridge_references_first_token(tiny_model):
    prompts = ["the capital of france is", "tokyo", "q : paris"]
    decode = tiny_model.tokenizer.decode
    want = [decode(_reference_greedy(tiny_model, p, 1), skip_special_tokens=True).strip() for p in prompts]
    assert next_token_answers(tiny_model, prompts) == want


def test_plain_model_shares_the_bridge_tensors(tiny_model):
    plain = plain_hf_model(tiny_model)
    live = {p.data_ptr() for p in hf_model(tiny_model).parameters()}
    assert all(p.data_ptr() in live for p in plain.parameters())
    tokens = tiny_model.to_tokens("the capital of france is")
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens).logits, tiny_model(tokens), atol=1e-4, rtol=1e-4)
        # an in-place edit of the bridge's weights is seen by the plain model
        w = next(hf_model(tiny_model).parameters())
        w.add_(0.5)
        torch.testing.assert_close(plain(tokens).logits, tiny_model(tokens), atol=1e-4, rtol=1e-4)
        w.sub_(0.5)


def test_target_scores_match_a_bridge_forward(tiny_model):
    prompts = ["the capital of france is", "tokyo is in"]
    targets = ["paris", "japan asia"]
    got = target_scores(tiny_model, prompts, targets, leading_space=True)
    for i, (p, t) in enumerate(zip(prompts, targets)):
        ptoks = tiny_model.to_tokens(p)
        tids = target_token_ids(tiny_model, t)
        full = torch.cat([ptoks, torch.tensor([tids])], dim=1)
        with torch.no_grad():
            lp = tiny_model(full)[0].log_softmax(-1)
        n = ptoks.shape[1]
        steps = lp[n - 1 : n - 1 + len(tids)]
        assert got["log_prob"][i].item() == pytest.approx(steps.gather(-1, torch.tensor(tids)[:, None]).sum().item(), abs=1e-4)
        first = steps[0]
        assert int(got["first_token_rank"][i]) == int((first > first[tids[0]]).sum())
        assert got["first_token_prob"][i].item() == pytest.approx(first[tids[0]].exp().item(), abs=1e-5)
        assert bool(got["greedy_match"][i]) == bool((steps.argmax(-1) == torch.tensor(tids)).all())


def test_empty_targets_and_bad_input_raise(tiny_model):
    for bad in ["", "   "]:
        with pytest.raises(ValueError, match="empty"):
            target_token_ids(tiny_model, bad)
        with pytest.raises(ValueError, match="empty"):
            target_scores(tiny_model, ["paris"], [bad])
    with pytest.raises(ValueError, match="2 prompts but 1"):
        target_scores(tiny_model, ["a", "b"], ["paris"])
    with pytest.raises(ValueError, match="1 prompts but 2"):
        check_answers(tiny_model, ["a"], [["x"], ["y"]])
    with pytest.raises(TypeError):
        generate_greedy(tiny_model, "one prompt")
    assert generate_greedy(tiny_model, []) == []


@pytest.mark.real_model
def test_smollm2_answers_and_ranks(smollm2):
    ok, gens = check_answers(
        smollm2,
        ["The capital of France is", "The official language of Spain is", "Q: What is the capital of Japan?\nA:"],
        [["Paris"], ["Spanish", "Castilian"], ["Tokyo"]],
    )
    assert ok[0] and ok[1], gens
    scores = target_scores(smollm2, ["The capital of France is", "The capital of France is"], ["Paris", "Rome"])
    assert int(scores["first_token_rank"][0]) == 0 and bool(scores["greedy_match"][0])
    assert scores["log_prob"][0] > scores["log_prob"][1]
    with pytest.raises(ValueError, match="empty"):
        target_token_ids(smollm2, "")


def test_the_shared_plain_model_follows_edits_and_replaced_tensors(tiny_model):
    """Fast path (one plain model per bridge, reused) against the slow one (a fresh plain model per call): the same
    logits after an in-place edit, and a rebuild when a tensor is replaced by a new one."""
    from ace_interp.evaluation.answers import shared_plain_hf_model

    tokens = tiny_model.to_tokens("the capital of france is")
    shared = shared_plain_hf_model(tiny_model)
    assert shared_plain_hf_model(tiny_model) is shared
    w = next(hf_model(tiny_model).parameters())
    with torch.no_grad():
        w.add_(0.5)  # in place: the same plain model sees it
        assert shared_plain_hf_model(tiny_model) is shared
        torch.testing.assert_close(shared(tokens).logits, plain_hf_model(tiny_model)(tokens).logits)
        w.sub_(0.5)
        module = next(m for m in hf_model(tiny_model).modules() if any(p is w for p in m.parameters(recurse=False)))
        name = next(n for n, p in module.named_parameters(recurse=False) if p is w)
        setattr(module, name, torch.nn.Parameter(w.detach().clone() + 1.0))  # replaced: a new tensor
        rebuilt = shared_plain_hf_model(tiny_model)
        assert rebuilt is not shared
        torch.testing.assert_close(rebuilt(tokens).logits, plain_hf_model(tiny_model)(tokens).logits)
        assert not torch.allclose(rebuilt(tokens).logits, shared(tokens).logits)
        setattr(module, name, w)


def test_generation_of_mixed_budgets_in_one_batch_matches_each_prompt_alone(tiny_model):
    """The one-batch decoder (each prompt prefilled alone, then decoded together over left-padded KV caches) gives
    every row the tokens `generate_greedy` gives that prompt alone with its own budget and stop rule."""
    from ace_interp.evaluation.answers import generate_greedy_each

    tok = tiny_model.tokenizer
    prompts = ["the capital of france is", "tokyo", "which country speaks german and the", "q : paris", "spain"]
    budgets = [7, 2, 5, 1, 6]
    newline = [True, False, True, False, False]
    got = generate_greedy_each(tiny_model, prompts, budgets, newline)
    want = [generate_greedy(tiny_model, [p], n, stop_at_newline=nl)[0] for p, n, nl in zip(prompts, budgets, newline)]
    assert got == want
    # and against the cache-free bridge loop (no stop token is hit in these rows: each budget is used up)
    ref = [tok.decode(_reference_greedy(tiny_model, p, n), skip_special_tokens=True) for p, n in zip(prompts, budgets)]
    assert got == ref
    with pytest.raises(ValueError, match="budgets"):
        generate_greedy_each(tiny_model, prompts, budgets[:2], newline)
