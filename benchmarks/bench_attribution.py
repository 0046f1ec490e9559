"""Attribution speed: exact all-neuron value scores vs a per-neuron loop vs a forward pass, one batch of prompts.

    python -m benchmarks.bench_attribution [--prompts 8] [--reference-neurons 256] [--model smollm2-135m]

Stages, all on the same batch of B prompts in one run:
  (c) one batched forward pass of the batch, and one forward+backward;
  (a) `value_scores`: exact full-vocabulary value scores of every FFN neuron in every layer for the batch
      (projected path: P_l = (γ ⊙ c(fc2_l)) W_Uᵀ once per layer chunk, shared by the B prompts);
  (a0) the same scores by the direct path (norm + unembedding + log-softmax of every x + v, per prompt) on
      `--direct-layers` layers, extrapolated per layer: the previous implementation, for comparison;
  (b) the per-neuron reference loop (one x + v → final norm → unembed → log-softmax per neuron) on random
      (prompt, layer, neuron) samples, extrapolated per neuron to (a)'s work (every neuron of every prompt);
  (d) `top_value_neurons`: exact top-100 per prompt via upper-bound pruning, checked against (a)'s top-100.
Printed ratios, all from this run: (a)/(c), (b)/(a), (a0)/(a), (a)/(d).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import torch

from ace_interp.attribution.value import target_token_ids, top_value_neurons, value_scores
from ace_interp.model import (
    NeuronActivations,
    apply_final_norm,
    final_norm_scale,
    load_model,
    neuron_activations,
    resolve_positions,
    residual_sub_values,
    tokenize_prompts,
    unembed,
)
from ace_interp.model.architecture import unembed_module
from benchmarks.common import Measurement, format_table, machine_description, measure

log = logging.getLogger(__name__)

PROMPTS = [
    ("The capital of France is", " Paris"),
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("The official language of Spain is", " Spanish"),
    ("Tokyo is the capital of", " Japan"),
    ("The capital of Germany is", " Berlin"),
    ("The official language of Brazil is", " Portuguese"),
    ("The Colosseum is located in the city of", " Rome"),
    ("Cairo is the capital of", " Egypt"),
]


def prompt_batch(n: int, words: list[str] | None = None) -> tuple[list[str], list[str]]:
    """n prompts and targets: the facts above (repeated as needed), or for word-level random models
    (`words` given) sequences of their words."""
    if words is not None:
        prompts = [" ".join(words[(7 * i + j) % len(words)] for j in range(12)) for i in range(n)]
        return prompts, [words[(3 * i + 1) % len(words)] for i in range(n)]
    facts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    return [p for p, _ in facts], [t for _, t in facts]


def reference_base(bridge, acts: NeuronActivations, target_ids: torch.Tensor) -> torch.Tensor:
    """log p(w | x^l) per prompt and layer (frozen final-norm divisor): the loop's baseline, computed once."""
    with torch.no_grad():
        scales = final_norm_scale(bridge, acts.final_resid)[:, None]  # [batch, 1, 1]
        log_probs = unembed(bridge, apply_final_norm(bridge, acts.x, scales)).double().log_softmax(-1)
        return log_probs.gather(-1, target_ids[:, None, None].expand(-1, acts.x.shape[1], 1))[..., 0]


def per_neuron_reference(
    bridge, acts: NeuronActivations, samples: list[tuple[int, int, int]], target_ids: torch.Tensor, base: torch.Tensor
) -> torch.Tensor:
    """The obviously-correct loop: one (prompt, layer, neuron) at a time, I = log p(w | x + v) − log p(w | x)
    through the final norm (frozen divisor of the prompt's final residual), the unembedding and a float64
    log-softmax (`base` = `reference_base`, amortised over a layer's neurons)."""
    out = []
    with torch.no_grad():
        for b, layer, k in samples:
            scale = final_norm_scale(bridge, acts.final_resid[b])
            v = acts.residual_coefficients[b, layer, k] * residual_sub_values(bridge, layer)[k]
            log_probs = unembed(bridge, apply_final_norm(bridge, acts.x[b, layer] + v, scale)).double().log_softmax(-1)
            out.append(log_probs[int(target_ids[b])] - base[b, layer])
    return torch.stack(out)


def float64_reference(
    bridge, acts: NeuronActivations, samples: list[tuple[int, int, int]], target_ids: torch.Tensor
) -> torch.Tensor:
    """I of each (prompt, layer, neuron) sample with the final norm, unembedding and log-softmax in float64
    (frozen divisor): the yardstick for the float32 paths' rounding."""
    head = unembed_module(bridge)
    W_U = head.weight.double()
    bias = None if getattr(head, "bias", None) is None else head.bias.double()
    out = []
    with torch.no_grad():
        for b, layer, k in samples:
            scale = final_norm_scale(bridge, acts.final_resid[b].double())
            x = acts.x[b, layer].double()
            v = acts.residual_coefficients[b, layer, k].double() * residual_sub_values(bridge, layer)[k].double()
            resid = torch.stack([x + v, x])
            logits = torch.nn.functional.linear(apply_final_norm(bridge, resid, scale).double(), W_U, bias)
            log_probs = logits.log_softmax(-1)[:, int(target_ids[b])]
            out.append(log_probs[0] - log_probs[1])
    return torch.stack(out)


def forward_stages(
    bridge, prompts: list[str], device: str, rows: list[Measurement], repeat: int = 2
) -> tuple[Measurement, Measurement]:
    """(c): one batched forward of the prompts, and one forward+backward (loss: Σ over prompts of the
    last position's logsumexp); both appended to `rows`."""
    tokens, lengths = tokenize_prompts(bridge, prompts)
    batch_rows = torch.arange(len(prompts), device=tokens.device)
    last = resolve_positions(lengths, -1)
    n = len(prompts)

    def forward():
        with torch.no_grad():
            bridge(tokens)

    def forward_backward():
        bridge(tokens)[batch_rows, last].logsumexp(-1).sum().backward()
        bridge.zero_grad(set_to_none=True)

    rows.append(fwd := measure(f"(c) forward, batch of {n}", forward, device, repeat=repeat))
    rows.append(bwd := measure(f"(c) forward+backward, batch of {n}", forward_backward, device, repeat=repeat))
    return fwd, bwd


@dataclass
class AttributionResult:
    rows: list[Measurement]
    ratios: dict[str, float]
    top_sets_identical: bool
    max_error: float  # max |(a) − (b)| over the (b) samples
    max_error64: float  # max |(a) − float64 evaluation| over the first 32 samples


def measure_attribution(
    bridge,
    prompts: list[str],
    targets: list[str | int],
    n_reference: int = 256,
    direct_layers: int = 1,
    k: int = 100,
    memory_budget: int | None = None,
    label: str = "",
    rows: list[Measurement] | None = None,
) -> AttributionResult:
    """Stages (a), (a0), (b), (c), (d) on one batch; shared by this benchmark and the GPU one. Each stage's
    measurement is appended to `rows` as soon as it is taken (so a caller keeps them if a later stage fails)."""
    dev = str(bridge.cfg.device)
    n = len(prompts)
    n_layers, d_mlp = bridge.cfg.n_layers, bridge.cfg.d_mlp
    n_neurons = n_layers * d_mlp
    budget = {} if memory_budget is None else {"memory_budget": memory_budget}
    rows = [] if rows is None else rows

    fwd, bwd = forward_stages(bridge, prompts, dev, rows)

    result = {}
    full = measure(
        f"(a) value_scores: {n_neurons:,} neurons x {n} prompts",
        lambda: result.setdefault("scores", value_scores(bridge, prompts, targets, **budget)),
        dev,
        note=f"{label}projected path",
    )
    rows.append(full)
    scores = result["scores"]

    acts = neuron_activations(bridge, prompts)
    target_ids = target_token_ids(bridge, targets, n)
    direct_layer_ids = list(range(n_layers - direct_layers, n_layers))
    direct = measure(
        f"(a0) direct path: {direct_layers} layer(s) x {n} prompts",
        lambda: value_scores(bridge, prompts, targets, layers=direct_layer_ids, method="direct", activations=acts, **budget),
        dev,
    )
    direct_all = direct.seconds / direct_layers * n_layers
    rows += [direct, Measurement("(a0) direct path, extrapolated to (a)'s work", direct_all, float("nan"), "extrapolated")]

    gen = torch.Generator().manual_seed(0)
    flat = torch.randint(0, n * n_neurons, (n_reference,), generator=gen).tolist()
    samples = [(i // n_neurons, (i % n_neurons) // d_mlp, i % d_mlp) for i in flat]
    base = reference_base(bridge, acts, target_ids)
    ref = {}
    loop = measure(
        f"(b) per-neuron loop: {n_reference} (prompt, neuron) samples",
        lambda: ref.setdefault("scores", per_neuron_reference(bridge, acts, samples, target_ids, base)),
        dev,
    )
    loop_all = loop.seconds / n_reference * n_neurons * n
    rows += [loop, Measurement("(b) per-neuron loop, extrapolated to (a)'s work", loop_all, float("nan"), "extrapolated")]
    exact = torch.stack([scores.scores[b, l, kk] for b, l, kk in samples]).double()
    max_error = (exact - ref["scores"].double()).abs().max().item()
    few = samples[:32]
    max_error64 = (exact[: len(few)] - float64_reference(bridge, acts, few, target_ids)).abs().max().item()

    topk = {}
    top = measure(
        f"(d) top_value_neurons: exact top-{k} x {n} prompts",
        lambda: topk.setdefault("frame", top_value_neurons(bridge, prompts, targets, k=k, **budget)),
        dev,
        note="incl. its forward",
    )
    rows.append(top)
    frame = topk["frame"]
    identical = all(
        set(zip(frame[frame.prompt == b].layer, frame[frame.prompt == b].neuron))
        == set(zip(scores.top(k, prompt=b).layer, scores.top(k, prompt=b).neuron))
        for b in range(n)
    )
    ratios = {
        "(a)/(c forward)": full.seconds / fwd.seconds,
        "(a)/(c forward+backward)": full.seconds / bwd.seconds,
        "(b)/(a)": loop_all / full.seconds,
        "(a0)/(a)": direct_all / full.seconds,
        "(a)/(d)": full.seconds / top.seconds,
        "seconds per attributed prompt (a)": full.seconds / n,
        "seconds per attributed prompt (d)": top.seconds / n,
    }
    return AttributionResult(rows, ratios, identical, max_error, max_error64)


def print_result(title: str, res: AttributionResult, k: int = 100) -> None:
    print(f"\n## {title}\n")
    print(format_table(res.rows))
    targets = {"(b)/(a)": "target >= 50x", "(a)/(d)": "target >= 10x"}
    print()
    for name, value in res.ratios.items():
        unit = "s" if name.startswith("seconds") else "x"
        print(f"{name:36s} = {value:10.2f}{unit}  {targets.get(name, '')}")
    print(f"{'top-' + str(k) + ' sets identical (d) vs (a)':36s} = {res.top_sets_identical}")
    print(f"{'max |(a) - (b) reference|':36s} = {res.max_error:.2e} nats")
    print(f"{'max |(a) - float64 evaluation|':36s} = {res.max_error64:.2e} nats (32 samples)")


def run(model: str = "smollm2-135m", n_prompts: int = 8, n_reference: int = 256, device: str | None = None,
        direct_layers: int = 1, threads: int | None = None) -> AttributionResult:
    """The benchmark on `model`; `threads` sets torch's CPU threads for the run (None: leave them)."""
    if threads:
        torch.set_num_threads(threads)
    bridge = load_model(model, device=device)
    prompts, targets = prompt_batch(n_prompts)
    res = measure_attribution(bridge, prompts, targets, n_reference, direct_layers)
    print_result(f"Attribution ({model}, {n_prompts} prompts; {machine_description()})", res)
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--reference-neurons", type=int, default=256)
    parser.add_argument("--direct-layers", type=int, default=1, help="layers the direct-path comparison (a0) runs on")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    run(args.model, args.prompts, args.reference_neurons, direct_layers=args.direct_layers, threads=args.threads)
