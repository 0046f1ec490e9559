"""Attribution speed on the default model: exact all-neuron value scores vs a per-neuron loop vs a forward.

Stages, all on the same batch of prompts in one run:
  (a) `value_scores`: exact full-vocabulary value scores of every FFN neuron in every layer (batched);
  (b) the per-neuron reference loop (one x+v → final norm → unembed → log-softmax per neuron) on a
      random subset of neurons, extrapolated per neuron to all of them;
  (c) one forward pass, and one forward+backward, of the same batch;
  (d) `top_value_neurons`: exact top-100 via upper-bound pruning, checked against (a)'s top-100 set.
Printed ratios: (a)/(c forward), (b)/(a), (a)/(d).
"""

from __future__ import annotations

import argparse
import logging

import torch

from ace_interp.attribution.value import target_token_ids, top_value_neurons, value_scores
from ace_interp.model import (
    apply_final_norm,
    final_norm_scale,
    load_model,
    neuron_activations,
    sub_values,
    unembed,
)
from benchmarks.common import Measurement, format_table, machine_description, measure

log = logging.getLogger(__name__)

PROMPTS = [
    ("The capital of France is", " Paris"),
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("The official language of Spain is", " Spanish"),
    ("Tokyo is the capital of", " Japan"),
]


def per_neuron_reference(bridge, acts, b, target, neurons, scale):
    """The obviously-correct loop: one neuron at a time."""
    out = []
    with torch.no_grad():
        base = unembed(bridge, apply_final_norm(bridge, acts.x[b, :][None], scale)).log_softmax(-1)
        for layer, k in neurons:
            v = acts.coefficients[b, layer, k] * sub_values(bridge, layer)[k]
            lp = unembed(bridge, apply_final_norm(bridge, acts.x[b, layer] + v, scale)).log_softmax(-1)
            out.append(lp[target] - base[0, layer, target])
    return torch.stack(out)


def run(model: str = "smollm2-135m", n_prompts: int = 2, n_reference: int = 256, device: str | None = None) -> list[Measurement]:
    bridge = load_model(model, device=device)
    dev = str(bridge.cfg.device)
    prompts = [p for p, _ in PROMPTS[:n_prompts]]
    targets = [t for _, t in PROMPTS[:n_prompts]]
    n_neurons = bridge.cfg.n_layers * bridge.cfg.d_mlp
    tokens = bridge.to_tokens(prompts[0])
    rows: list[Measurement] = []

    rows.append(fwd := measure(f"(c) forward, {n_prompts} prompts", lambda: [bridge(bridge.to_tokens(p)) for p in prompts], dev, repeat=3))

    def fwd_bwd():
        for p in prompts:
            bridge(bridge.to_tokens(p))[0, -1].logsumexp(-1).backward()
        bridge.zero_grad(set_to_none=True)

    rows.append(measure(f"(c) forward+backward, {n_prompts} prompts", fwd_bwd, dev, repeat=2))

    result = {}
    rows.append(full := measure(
        f"(a) value_scores: all {n_neurons:,} neurons x {n_prompts} prompts",
        lambda: result.setdefault("scores", value_scores(bridge, prompts, targets)), dev,
    ))

    acts = neuron_activations(bridge, prompts)
    target_ids = target_token_ids(bridge, targets)
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(0, n_neurons, (n_reference,), generator=gen)
    neurons = [(int(i) // bridge.cfg.d_mlp, int(i) % bridge.cfg.d_mlp) for i in picks]
    scale = final_norm_scale(bridge, acts.final_resid[0])
    ref = {}
    m = measure(
        f"(b) per-neuron loop: {n_reference} neurons x 1 prompt",
        lambda: ref.setdefault("scores", per_neuron_reference(bridge, acts, 0, int(target_ids[0]), neurons, scale)), dev,
    )
    extrapolated = m.seconds / n_reference * n_neurons * n_prompts
    rows.append(m)
    rows.append(Measurement(f"(b) per-neuron loop, extrapolated to (a)'s work", extrapolated, float("nan"), "extrapolated"))
    exact = result["scores"].scores[0].reshape(-1)[picks]
    max_err = (exact - ref["scores"]).abs().max().item()

    topk = {}
    rows.append(top := measure(
        f"(d) top_value_neurons: exact top-100 x {n_prompts} prompts",
        lambda: topk.setdefault("frame", top_value_neurons(bridge, prompts, targets, k=100)), dev,
    ))
    same = all(
        set(map(tuple, topk["frame"].query("prompt == @b")[["layer", "neuron"]].values))
        == set(map(tuple, result["scores"].top(100, prompt=b)[["layer", "neuron"]].values))
        for b in range(n_prompts)
    )

    print(f"\n## Attribution ({model}, {machine_description()})\n")
    print(format_table(rows))
    print(f"\nratio (a)/(c forward)        = {full.seconds / fwd.seconds:8.1f}x  (all-neuron exact scoring vs one forward)")
    print(f"ratio (b)/(a)                = {extrapolated / full.seconds:8.1f}x  (speed-up over the per-neuron loop; target >= 50x)")
    print(f"ratio (a)/(d)                = {full.seconds / top.seconds:8.1f}x  (top-k mode speed-up; target >= 10x)")
    print(f"top-100 sets identical       = {same}")
    print(f"max |batched - reference|    = {max_err:.2e} nats on {n_reference} sampled neurons")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--reference-neurons", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    run(args.model, args.prompts, args.reference_neurons)
