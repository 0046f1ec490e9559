"""Toy-model training and evaluation: a tiny-world run that learns, the checkpoint boots in the bridge,
the fast evaluation equals greedy decoding, and the shipped models meet the acceptance bars."""

import json
from pathlib import Path

import pytest
import torch

from ace_interp.data.tokenizer import BOS_ID, EOS_ID, encode_words, world_tokenizer
from ace_interp.data.train_toy import (
    BARS,
    CPU15_RECIPES,
    TrainConfig,
    build_model,
    correct,
    cpu15_config,
    encode_examples,
    evaluate,
    item_loss,
    main,
    make_batch,
    meets_bars,
    parse_args,
    save_result,
    target_logits,
    train,
)
from ace_interp.data.world import (
    WorldConfig,
    eval_split,
    generate_world,
    load_eval_split,
    load_world,
    training_examples,
)
from ace_interp.model import load_model

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TINY_WORLD = WorldConfig(n_persons=24, n_countries=6, seed=0, three_hop=True)


def _tiny_cfg(arch="gptj", steps=120, seed=0):
    return TrainConfig(
        arch=arch, n_layers=2, d_model=64, d_mlp=128, n_heads=4, steps=steps, batch_size=48, lr=4e-3, warmup=10,
        eval_every=10_000, eval_sample=100, stop_at_bars=False, seed=seed, threads=1, world=TINY_WORLD,
    )


@pytest.fixture(scope="module")
def tiny_run():
    cfg = _tiny_cfg()
    return cfg, train(cfg, progress=False)


def test_tiny_world_training_learns(tiny_run):
    cfg, result = tiny_run
    untrained = train(_tiny_cfg(steps=0), progress=False).metrics
    assert result.steps == cfg.steps
    # single-hop facts of a 24-person world are learned far above chance in ~120 small steps
    assert result.metrics["single_hop"] > 0.5 > untrained["single_hop"] + 0.3
    assert set(result.metrics["n"]) >= {"single_hop", "two_hop_direct_heldout", "three_hop_direct_heldout",
                                       "two_hop_cot_heldout", "three_hop_cot_heldout", "cot_heldout"}


def test_training_is_deterministic():
    a = train(_tiny_cfg(steps=8), progress=False).model.state_dict()
    b = train(_tiny_cfg(steps=8), progress=False).model.state_dict()
    c = train(_tiny_cfg(steps=8, seed=1), progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _greedy(hf, tokenizer, prompt: str, max_new: int = 40) -> list[int]:
    ids = [BOS_ID, *encode_words(tokenizer, prompt)]
    out = []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(hf(torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == EOS_ID:
                break
    return out


def test_fast_evaluation_equals_greedy_decoding(tiny_run):
    """`correct` scores all target tokens in one teacher-forced pass; the reference decodes token by token."""
    _, result = tiny_run
    split = eval_split(result.world, heldout_only=False)
    exs = split["single_hop"][:20] + split["two_hop_direct"][:10] + split["two_hop_cot"][:15] + split["three_hop_cot"][:15]
    fast = correct(result.model, result.tokenizer, exs)
    for ex, ok in zip(exs, fast, strict=True):
        want = encode_words(result.tokenizer, ex.target)
        if ex.kind.endswith("cot"):
            got = _greedy(result.model, result.tokenizer, ex.prompt)
            assert ok == (got == [*want, EOS_ID]), ex
        else:
            got = _greedy(result.model, result.tokenizer, ex.prompt, max_new=1)
            assert ok == (got == want), ex
    assert any(fast) and not all(fast)  # both outcomes are exercised


def test_saved_checkpoint_boots_in_the_bridge(tiny_run, tmp_path):
    cfg, result = tiny_run
    save_result(result, cfg, tmp_path / "toy")
    bridge = load_model(tmp_path / "toy", device="cpu")
    prompt = eval_split(result.world)["two_hop_direct"][0].prompt
    tokens = bridge.to_tokens(prompt)
    assert tokens[0].tolist() == [BOS_ID, *encode_words(result.tokenizer, prompt)]
    with torch.no_grad():
        ref = result.model(tokens).logits
        assert torch.allclose(bridge(tokens), ref, atol=1e-4)
    # evaluating through the bridge gives the same numbers as through the HF model
    split = eval_split(result.world)
    assert evaluate(bridge, bridge.tokenizer, split, sample=50) == evaluate(result.model, result.tokenizer, split, sample=50)
    metrics = json.loads((tmp_path / "toy" / "metrics.json").read_text())
    assert metrics["single_hop"] == result.metrics["single_hop"] and "meets_bars" in metrics
    info = json.loads((tmp_path / "toy" / "training.json").read_text())
    assert info["steps_run"] == cfg.steps and info["config"]["arch"] == "gptj"


def test_cli_on_a_tiny_world(tmp_path):
    world = generate_world(TINY_WORLD)
    world.save(tmp_path / "world.json")
    rc = main(["--arch", "qwen3", "--out", str(tmp_path / "q"), "--world", str(tmp_path / "world.json"),
               "--steps", "3", "--n-layers", "2", "--d-model", "32", "--d-mlp", "64", "--no-progress",
               "--write-world", str(tmp_path / "w"), "--kind-weights", "single_hop=0.5,two_hop_cot=0.5"])
    assert rc == 1  # 3 steps cannot meet the bars; the exit status says so
    info = json.loads((tmp_path / "q" / "training.json").read_text())
    assert info["config"]["kind_weights"] == {"single_hop": 0.5, "two_hop_cot": 0.5}
    assert (tmp_path / "q" / "model.safetensors").exists() and (tmp_path / "w" / "mquake_cases.json").exists()
    assert load_world(tmp_path / "w").to_dict() == world.to_dict()
    bridge = load_model(tmp_path / "q", device="cpu")
    assert type(bridge.original_model).__name__ == "Qwen3ForCausalLM"


@pytest.mark.parametrize("bad", ["single_hop=x", "single_hop", "four_hop=1"])
def test_cli_rejects_bad_kind_weights(bad, capsys):
    with pytest.raises(SystemExit):
        main(["--arch", "gptj", "--out", "unused", "--kind-weights", bad])
    assert "--kind-weights" in capsys.readouterr().err


def test_unknown_architecture_is_rejected():
    with pytest.raises(ValueError, match="unknown architecture"):
        TrainConfig(arch="bert")


def _shipped(name):
    folder = ASSETS / name
    if not (folder / "config.json").exists():
        pytest.fail(f"{folder} is missing: regenerate it with `python -m ace_interp.data.train_toy` (assets/README.md)")
    return folder, load_model(name, device="cpu")


@pytest.mark.parametrize("name", ["toy-gptj", "toy-qwen3"])
def test_shipped_models_load_and_match_their_metrics(name):
    folder, bridge = _shipped(name)
    arch = {"toy-gptj": "GPTJForCausalLM", "toy-qwen3": "Qwen3ForCausalLM"}[name]
    assert type(bridge.original_model).__name__ == arch
    assert 6 <= bridge.cfg.n_layers <= 8
    assert sum(f.stat().st_size for f in folder.iterdir()) < 20_000_000
    split = load_eval_split(ASSETS / "world")
    # 1,000 items per kind (the whole held-out split where smaller), through the bridge
    m = evaluate(bridge, bridge.tokenizer, split, sample=1000, seed=0)
    shipped = json.loads((folder / "metrics.json").read_text())
    assert m["single_hop"] >= BARS["single_hop"], m
    for key in ("two_hop_direct_heldout", "cot_heldout", "three_hop_direct_heldout"):
        assert abs(m[key] - shipped[key]) < 0.05, (key, m[key], shipped[key])  # a sample of the full evaluation
    assert shipped["meets_bars"] == meets_bars(shipped)


@pytest.mark.parametrize("name", ["toy-gptj", "toy-qwen3"])
def test_shipped_models_meet_the_bars(name):
    folder, _ = _shipped(name)
    shipped = json.loads((folder / "metrics.json").read_text())  # the full evaluation on the shipped split
    for key, bar in BARS.items():
        assert shipped[key] >= bar, (key, shipped[key], bar)


def test_cpu15_recipe_on_the_command_line_is_the_named_config_and_flags_override_it():
    _, cfg = parse_args(["--arch", "gptj", "--out", "unused", "--recipe", "cpu15"])
    assert cfg == cpu15_config("gptj")
    assert (cfg.n_layers, cfg.steps, cfg.threads, cfg.time_limit_s, cfg.world.n_persons) == (3, 3500, 2, 900.0, 300)
    _, cfg = parse_args(["--arch", "qwen3", "--out", "unused", "--recipe", "cpu15", "--steps", "10", "--n-persons", "50"])
    assert cfg == cpu15_config("qwen3", steps=10, world=WorldConfig(n_persons=50))
    assert cfg.kind_weights == CPU15_RECIPES["qwen3"]["kind_weights"]
    with pytest.raises(ValueError, match="loss_per"):
        TrainConfig(loss_per="sequence")


def test_token_averaged_loss_weighs_tokens_not_items():
    """loss_per="token": one mean over all target tokens of the batch; "item": the mean of per-item means."""
    cfg = _tiny_cfg()
    world = generate_world(TINY_WORLD)
    tok = world_tokenizer(world)
    examples = training_examples(world)
    enc = encode_examples(tok, examples["two_hop_cot"][:2] + examples["single_hop"][:3])
    ids, mask = make_batch(enc.rows, enc.starts)
    torch.manual_seed(0)
    model = build_model(cfg, len(tok))
    with torch.no_grad():
        per_token, per_item = item_loss(model, ids, mask, "token"), item_loss(model, ids, mask, "item")
        losses = []  # one row at a time: the cross-entropy of each target token
        for i in range(ids.shape[0]):
            logits = target_logits(model, ids[i : i + 1], mask[i : i + 1])
            losses.append(torch.nn.functional.cross_entropy(logits, ids[i, 1:][mask[i, :-1]], reduction="none"))
    torch.testing.assert_close(per_token, torch.cat(losses).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per_item, torch.stack([l.mean() for l in losses]).mean(), rtol=1e-5, atol=1e-6)
    assert abs(per_token - per_item) > 1e-4  # CoT items are longer, so the two differ


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(CPU15_RECIPES))
def test_training_command_reproduces_the_bars_within_15_minutes(arch):
    """The 15-minute CPU recipe (`--recipe cpu15`; assets/README.md, "The 15-minute CPU reproduction") must meet the
    bars within 900 s of training on 2 idle cores (2 threads; on a busy machine two threads are much slower than
    one -- run this one alone). Seed 0 met them on this machine for both architectures (gptj 851 s, qwen3 see
    assets/README.md); over GPU seeds each recipe met them about half the time, so on another CPU, whose rounding
    takes a different path, this test can fail on CoT by a few tenths of a point."""
    result = train(cpu15_config(arch), progress=False)
    assert result.train_seconds <= 900 + 120  # the last periodic evaluation may run past the limit
    assert meets_bars(result.metrics), result.metrics
