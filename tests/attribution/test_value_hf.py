"""Value attribution on SmolLM2-135M against a plain-`transformers` brute force (no bridge, HF tokenizer).

The reference knows nothing of ace-interp: it tokenises with the model's own `AutoTokenizer`, runs the plain
`LlamaForCausalLM`, reads x^l (the input of `post_attention_layernorm`), m^l (the input of `down_proj`) and the
final residual (the input of `model.norm`) with forward hooks at the last position, and evaluates, neuron by
neuron and exactly over the full vocabulary,

    I_k = log p(w | x^l + m_k fc2_k) − log p(w | x^l),   p(· | r) = softmax(lm_head(γ ⊙ r / s)),

with s the RMS of the actual final residual (the frozen final norm, docs/attribution.md). To stay well under
a minute it does not score all 46,080 neurons. With Δ = a_k W_U (γ ⊙ fc2_k), a_k = m_k / s, the score is
I_k = Δ_w − log E_p[e^Δ] ≤ Δ_w − E_p[Δ] (Jensen), so

    I_k ≤ a_k (γ ⊙ fc2_k) · (W_U[w] − Σ_j p_j(x^l) W_U[j])

is a provable upper bound from one log-softmax per layer; every neuron whose bound reaches the 20th score
among those scored exactly is scored too (with 1e-3 nats of slack for float32 rounding), and the rest cannot
be in the top 20. The test fails when ace-interp tokenises differently from the model (a BOS in front moved
scores by up to 0.51 nats, top-20 overlap 16/20) or scores differently.
"""

import pytest
import torch

from ace_interp.attribution import top_value_neurons
from ace_interp.model.loading import resolve_model_source

CASES = [("The capital of France is", " Paris"), ("The Eiffel Tower is located in the country of", " France")]
TOP = 20
TOLERANCE = 1e-4  # nats


@pytest.fixture(scope="module")
def plain_smollm2(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model_source("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _last_position_reads(model, ids: list[int]) -> dict:
    """x^l, m^l (per layer) and the final residual at the last position, from plain forward hooks."""
    got: dict = {"x": {}, "m": {}}
    handles = []
    for l, layer in enumerate(model.model.layers):
        handles.append(layer.post_attention_layernorm.register_forward_hook(
            lambda mod, args, out, l=l: got["x"].__setitem__(l, args[0][0, -1].detach())))
        handles.append(layer.mlp.down_proj.register_forward_hook(
            lambda mod, args, out, l=l: got["m"].__setitem__(l, args[0][0, -1].detach())))
    handles.append(model.model.norm.register_forward_hook(
        lambda mod, args, out: got.__setitem__("final", args[0][0, -1].detach())))
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    return got


def _brute_force(model, reads: dict, target: int, neurons: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """I_k for each (layer, neuron), one full-vocabulary log-softmax per neuron (in row chunks)."""
    norm, head = model.model.norm, model.lm_head
    s = (reads["final"].pow(2).mean() + norm.variance_epsilon).sqrt()

    def log_p(resid):
        return head(norm.weight * resid / s).double().log_softmax(-1)[..., target]

    out = {}
    with torch.no_grad():
        for l in sorted({l for l, _ in neurons}):
            ks = [k for ll, k in neurons if ll == l]
            x, m = reads["x"][l], reads["m"][l]
            fc2 = model.model.layers[l].mlp.down_proj.weight[:, ks].T  # [n, d_model]
            base = log_p(x)
            for start in range(0, len(ks), 256):
                rows = x + m[ks[start:start + 256], None] * fc2[start:start + 256]
                for k, v in zip(ks[start:start + 256], (log_p(rows) - base).tolist()):
                    out[(l, k)] = v
    return out


def _bounds(model, reads: dict, target: int) -> dict[tuple[int, int], float]:
    """Jensen's upper bound on I_k for every neuron (module docstring), one log-softmax per layer."""
    norm, head = model.model.norm, model.lm_head
    s = (reads["final"].pow(2).mean() + norm.variance_epsilon).sqrt()
    out = {}
    with torch.no_grad():
        for l, layer in enumerate(model.model.layers):
            p = head(norm.weight * reads["x"][l] / s).double().softmax(-1).float()
            u = head.weight[target] - p @ head.weight  # W_U[w] − E_p W_U
            slope = (layer.mlp.down_proj.weight.T * norm.weight) @ u / s  # (γ ⊙ fc2_k) · u / s
            out.update({(l, k): float(v) for k, v in enumerate(reads["m"][l] * slope)})
    return out


@pytest.mark.real_model
@pytest.mark.parametrize("prompt,answer", CASES)
def test_default_value_attribution_matches_plain_hf(smollm2, plain_smollm2, prompt, answer):
    model, tokenizer = plain_smollm2
    ids = tokenizer(prompt)["input_ids"]
    assert smollm2.to_tokens(prompt)[0].tolist() == ids  # the bridge tokenises as the model's tokenizer does
    target = tokenizer(answer, add_special_tokens=False)["input_ids"][0]

    ours = top_value_neurons(smollm2, prompt, answer, k=TOP)  # default settings
    reads = _last_position_reads(model, ids)
    bounds = _bounds(model, reads, target)
    # score our top 20 and the reference's likeliest rivals, then every neuron whose bound reaches the cutoff
    seed = [(int(l), int(k)) for l, k in zip(ours.layer, ours.neuron)]
    seed += sorted(bounds, key=bounds.get, reverse=True)[:100]
    scored = _brute_force(model, reads, target, seed)
    cutoff = sorted(scored.values(), reverse=True)[TOP - 1]
    rest = [n for n, b in bounds.items() if b >= cutoff - 1e-3 and n not in scored]
    scored.update(_brute_force(model, reads, target, rest))
    print(f"{prompt!r}: brute-forced {len(scored)} of {len(bounds)} neurons (cutoff {cutoff:.3f} nats)")

    reference = sorted(scored, key=scored.get, reverse=True)[:TOP]
    assert set(seed[:TOP]) == set(reference)
    for (l, k), score in zip(seed[:TOP], ours.score):
        assert abs(score - scored[(l, k)]) <= TOLERANCE, (l, k, score, scored[(l, k)])
