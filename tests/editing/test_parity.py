"""Parity of the `reference` preset with the released ROME, MEMIT and PMET code, on the shipped toy-gptj.

The fixtures in ../shared/parity (its README states the setting and the tolerances) are the outputs of
kmeng01/memit @80426fd (ROME and MEMIT) and xpq-tech/PMET @80643f2, run on `assets/toy-gptj`: 8 single edits per
method (PMET twice: KL weight 0.0625 and the released 1) and one batch of 8 for MEMIT and PMET. Our editors are run
with `hparams_from_reference` of the fixture's own `hparams_*.json` (the reference preset's algorithm settings on
top), on our own covariance of the same 2,000 corpus tokens. Skipped when the folder is absent.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/editing/test_parity.py
"""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from ace_interp.editing import EditRequest, compute_keys, hparams_from_reference, load_preset, reference_fields
from ace_interp.editing.covariance import second_moments
from ace_interp.editing.keys import encode, hf_runner
from ace_interp.editing.memit import memit_updates
from ace_interp.editing.pmet import pmet_updates
from ace_interp.editing.rome import rome_updates
from ace_interp.model import load_model
from ace_interp.model.architecture import ModelSpec
from ace_interp.model.loading import REPO_ROOT
from ace_interp.model.weights import apply_weight_updates

PARITY = Path(__file__).resolve().parents[3] / "shared" / "parity"  # ../shared from the repository root
pytestmark = pytest.mark.skipif(not (PARITY / "README.md").exists(), reason=f"{PARITY} is absent")

LAYER = 1  # the fixtures' one edited layer: transformer.h.1.mlp.fc_out
WRITTEN = f"transformer.h.{LAYER}.mlp.fc_out.weight"
UPDATES = {"rome": rome_updates, "memit": memit_updates, "pmet": pmet_updates}
# where each method's target z sits, and its name in the fixture (ROME: v*; PMET: both of its vectors)
TARGETS = {"rome": {"mlp": "v_star"}, "memit": {"resid": "z"}, "pmet": {"mlp": "z_ffn", "attn": "z_attn"}}


def _method(fixture: str) -> str:
    return "pmet" if fixture.startswith("pmet") else fixture


def _load_json(name: str):
    return json.loads((PARITY / name).read_text())


def _tensors(fixture: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(PARITY / f"{fixture}.safetensors"))


@pytest.fixture(scope="module")
def toy_gptj():
    """The toy, run on one thread as the fixtures were (and ~100× faster than two threads on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_model(REPO_ROOT / "assets" / "toy-gptj", device="cpu")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def parity_requests() -> list[EditRequest]:
    return [EditRequest(r["prompt"], r["subject"], r["target_new"]["str"], r["target_true"]["str"], r["case_id"])
            for r in _load_json("requests.json")]


def _relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double().flatten(), ref.double().flatten()
    return float((ours - ref).norm() / ref.norm())


def _check_delta(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """The README's ΔW tolerance: cosine ≥ 0.99999, relative difference ≤ 1e-3, relative norm difference ≤ 1e-4."""
    ours, ref = ours.double().flatten(), ref.double().flatten()
    cosine = float(torch.nn.functional.cosine_similarity(ours, ref, 0))
    assert cosine >= 0.99999, f"{what}: ΔW cosine {cosine}"
    assert _relative(ours, ref) <= 1e-3, f"{what}: ‖ΔW − ΔW_ref‖/‖ΔW_ref‖ = {_relative(ours, ref)}"
    assert abs(float(ours.norm() - ref.norm())) / float(ref.norm()) <= 1e-4, f"{what}: ‖ΔW‖ differs"


def _reference_hparams(fixture: str):
    hp = hparams_from_reference(_method(fixture), _load_json(f"hparams_{fixture}.json")["hparams"], n_layers=6)
    return dataclasses.replace(hp, covariance=dataclasses.replace(hp.covariance, progress=False))


def _edited_answers(bridge, requests, updates) -> list[tuple[bool, float]]:
    """(greedy answer is target_new, log p(target_new)) at each bare prompt's last position, with `updates`
    written (and undone afterwards): the fixtures' `eval.edited`."""
    runner = hf_runner(bridge)
    write = apply_weight_updates(bridge, updates, label="parity")
    try:
        out = []
        for r in requests:
            with torch.no_grad():
                logits = runner.logits(torch.tensor([encode(bridge, r.text)]))[0, -1].double()
            new = encode(bridge, " " + r.target_new)[-1]
            out.append((int(logits.argmax()) == new, float(logits.log_softmax(-1)[new])))
        return out
    finally:
        write.undo()


def test_covariance_recipe_reproduces_the_reference(toy_gptj):
    """E[kkᵀ] over the first 2,000 non-BOS tokens of the world corpus (the README's recipe) is the fixture's C."""
    from safetensors.torch import load_file

    ours = second_moments(toy_gptj, [LAYER], n_tokens=2000, progress=False, use_cache=False)[LAYER]
    ref = load_file(str(PARITY / "covariance.safetensors"))[f"transformer.h.{LAYER}.mlp.fc_out/mom2"]
    assert _relative(ours, ref) <= 1e-5


def test_keys_match_the_reference(toy_gptj, parity_requests):
    """Keys of the bare prompts, one at a time and as one padded batch, within 1e-5 relative."""
    tensors = _tensors("memit")
    batch = compute_keys(toy_gptj, parity_requests, [LAYER])[LAYER]
    assert _relative(batch, tensors["batch/k"]) <= 1e-5
    for i, r in enumerate(parity_requests):
        single = compute_keys(toy_gptj, [r], [LAYER])[LAYER][0]
        assert _relative(single, tensors[f"single/{i}/k"]) <= 1e-5, f"request {i}"


@pytest.mark.parametrize("fixture", ["rome", "memit", "pmet", "pmet_kl1"])
def test_single_edits_match_the_reference(toy_gptj, parity_requests, fixture):
    method, hp = _method(fixture), _reference_hparams(fixture)
    record, tensors = _load_json(f"{fixture}.json"), _tensors(fixture)
    for i, request in enumerate(parity_requests):
        result = UPDATES[method](toy_gptj, [request], hp, [""])
        opt = record["single"][i]["optimisation"]
        assert result.info["n_evals"] == [opt["n_forward_evals"]], f"request {i}: forward evaluations"
        assert result.info["stop_reasons"] == [opt["stop_reason"]], f"request {i}: stop reason"
        losses = result.info["target_losses"]
        losses = losses[0] if method == "rome" else losses
        ref_losses = [step["loss"] for step in opt["trajectory"]]
        assert all(abs(a - b) <= 1e-3 * max(1.0, abs(b)) for a, b in zip(losses, ref_losses, strict=True)), f"request {i}"
        if method == "rome":
            targets = {"mlp": result.info["values"]}
        else:
            targets = result.info["target"].targets
        for site, name in TARGETS[method].items():
            assert _relative(targets[site][0], tensors[f"single/{i}/{name}"]) <= 1e-4, f"request {i}: {name}"
        _check_delta(result.updates[(LAYER, "W_out")].T, tensors[f"single/{i}/delta/{WRITTEN}"], f"request {i}")
        ((hit, logprob),) = _edited_answers(toy_gptj, [request], result.updates)
        edited = record["single"][i]["eval"]["edited"]
        assert hit == edited["efficacy"], f"request {i}: efficacy"
        assert abs(logprob - edited["logprob_target_new"]) <= 1e-2, f"request {i}: edited log-prob"


@pytest.mark.parametrize("fixture", ["memit", "pmet", "pmet_kl1"])
def test_batch_edit_matches_the_reference(toy_gptj, parity_requests, fixture):
    """The batch of 8: each request optimised on its own (z equal to the single edits'), one solve for all."""
    method, hp = _method(fixture), _reference_hparams(fixture)
    record, tensors = _load_json(f"{fixture}.json"), _tensors(fixture)
    result = UPDATES[method](toy_gptj, parity_requests, hp, [""])
    assert result.info["n_evals"] == [o["n_forward_evals"] for o in record["batch"]["optimisation"]]
    for site, name in TARGETS[method].items():
        assert _relative(result.info["target"].targets[site], tensors[f"batch/{name}"]) <= 1e-4, name
    _check_delta(result.updates[(LAYER, "W_out")].T, tensors[f"batch/delta/{WRITTEN}"], "batch")
    answers = _edited_answers(toy_gptj, parity_requests, result.updates)
    assert [hit for hit, _ in answers] == [e["edited"]["efficacy"] for e in record["batch"]["eval"]]


def _released(fixture: str) -> dict:
    """The released GPT-J hparams, rebuilt from a fixture: the values used, with every `changed_from_released`
    field put back to its released value."""
    record = _load_json(f"hparams_{fixture}.json")
    return {**record["hparams"], **{k: v["released"] for k, v in record["changed_from_released"].items()}}


GPTJ_6B = ModelSpec(architecture="GPTJForCausalLM", n_layers=28, d_model=4096, d_mlp=16384, d_vocab=50400,
                    gated_mlp=False, parallel_attn_mlp=True, normalization="layernorm", act_fn="gelu_new")


@pytest.mark.parametrize("fixture", ["rome", "memit", "pmet"])
def test_reference_preset_equals_the_released_gptj_configuration(fixture):
    method, released = _method(fixture), _released(fixture)
    entry = next(e for e in load_preset(method, "reference")["released"] if e["architecture"] == "GPTJForCausalLM")
    assert entry["source"]["path"].endswith(_load_json(f"hparams_{fixture}.json")["reference_hparams_file"].split("/", 1)[1])
    assert {k: entry["hparams"].get(k) for k in released} == released
    # ...and the dataclass the preset gives GPT-J-6B carries those values
    fields = reference_fields(method, GPTJ_6B)
    hp = hparams_from_reference(method, fields, GPTJ_6B.n_layers)
    t = hp.target
    assert (t.v_num_grad_steps, t.v_lr, t.v_weight_decay, t.clamp_norm_factor, t.subject_kl_factor, t.kl_factor) == (
        released["v_num_grad_steps"], released["v_lr"], released["v_weight_decay"], released["clamp_norm_factor"],
        released["kl_factor"], 0.0)
    assert t.decay_power == 2 and t.stop_on == "loss" and t.per_request and hp.covariance.ridge == 0
    if method == "rome":
        assert hp.layer == released["layers"][0] and t.context_lengths == tuple(map(tuple, released["context_template_length_params"]))
    else:
        assert list(hp.layers) == released["layers"]
        assert hp.covariance.cov_weight == released["mom2_update_weight"] and hp.covariance.context_keys == "grouped"
        assert t.context_lengths == ((10, 5),)  # memit_main / pmet_main get_context_templates
    if method == "pmet":
        assert (t.argmax_nll_factor, t.argmax_kl_stop, hp.joint_attention, hp.spread_accounting) == (0.1, 0.01, True, "ffn")


def test_reference_preset_scales_layers_and_lambda_to_the_toy():
    """Away from the released model: layers mapped proportionally (GPT-J's 3–8 and 5 land on the toy's layer 1, the
    parity fixtures' layer), λ scaled with d_mlp, the loss read at the last block."""
    toy = dataclasses.replace(GPTJ_6B, n_layers=6, d_model=128, d_mlp=512)
    for method in ("rome", "memit", "pmet"):
        fields = reference_fields(method, toy)
        assert fields["layers"] == [1] and fields["v_loss_layer"] == 5
    assert math.isclose(reference_fields("memit", toy)["mom2_update_weight"], 15000 * 512 / 16384)
    assert reference_fields("ace", toy)["layers"] == [[1], [4, 5]]
    # Qwen3-8B's adjacent groups [[25..27], [28..32]] collapse onto layer 4 of 6: kept disjoint
    qwen_toy = dataclasses.replace(toy, architecture="Qwen3ForCausalLM", d_mlp=384)
    assert reference_fields("ace", qwen_toy)["layers"] == [[3], [4, 5]]
