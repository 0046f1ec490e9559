"""Bridge lag: does a 2-hop question's bridge entity surface in the value neurons before its final answer?

    >>> from ace_interp.analysis.bridge_lag import bridge_lag, lag_summary
    >>> lag = bridge_lag(bridge, cases)                 # 2-hop MQuAKE cases (bridge = the first hop's answer)
    >>> lag_summary(lag.lags)                           # n, mean lag, its 95% interval, sign test
    >>> lag.curves                                      # case, token (bridge/answer), layer, mass, share

For a 2-hop question ("the capital of the country where the Eiffel Tower is" → " Paris", via the bridge
" France") take, at the question's last position, the per-layer value-attribution curve of two tokens:

    C_w(l) = Σ_{(l,k) ∈ V_w} max(0, I(v^l_k; w)),   V_w = the top-N value neurons for token w (frozen norm)

once with w = the bridge entity's first token and once with w = the final answer's first token (same prompt,
same position, same neurons; `attribution.value`). Each curve's peak layer and centre of mass
(Σ_l l · C_w(l) / Σ_l C_w(l)) give

    peak_lag = peak(answer) − peak(bridge),     centre_lag = centre(answer) − centre(bridge).

A positive lag means the implicit bridge is promoted in earlier layers than the answer. Unlike the query-score
curve (`analysis.pathways`), whose query neurons are by definition read only by value neurons of *later*
layers, both curves here are value curves over all layers, so the lag can come out negative, zero or positive.
`lag_summary` reports the distribution over cases: mean with a seeded bootstrap 95% interval, median, the
counts of positive / zero / negative lags and the exact sign-test p-value (ties dropped;
`evaluation.stats.sign_test`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.attribution.value import target_token_ids, top_value_neurons
from ace_interp.data.mquake import MQuAKECase
from ace_interp.evaluation.stats import sign_test
from ace_interp.model import NeuronActivations, neuron_activations

log = logging.getLogger(__name__)

LAG_KINDS = ("peak_lag", "centre_lag")


@dataclass
class BridgeLag:
    """curves: case, token (bridge / answer), layer, mass, share — one row per case × token × layer.
    lags: case, prompt, bridge, answer, bridge_peak, answer_peak, peak_lag, bridge_centre, answer_centre,
    centre_lag, answer_is_top (the model's next token at that position is the answer's first token)."""

    curves: pd.DataFrame
    lags: pd.DataFrame

    def summary(self, which: str = "peak_lag", answered_only: bool = False) -> dict:
        """`lag_summary` of these lags (of the cases the model answers, with `answered_only`)."""
        lags = self.lags[self.lags.answer_is_top] if answered_only else self.lags
        return lag_summary(lags, which)


def lag_summary(lags: pd.DataFrame, which: str = "peak_lag", n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Distribution of one lag column: n, mean, bootstrap 95% interval of the mean (percentile, seeded),
    median, n_positive / n_zero / n_negative and the two-sided exact sign-test p-value."""
    if which not in LAG_KINDS:
        raise ValueError(f"which must be one of {LAG_KINDS}, got {which!r}")
    values = lags[which].to_numpy(dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("no cases to summarise")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, n, size=(n_resamples, n))].mean(1)
    low, high = np.quantile(means, [0.025, 0.975])
    positive, negative = int((values > 0).sum()), int((values < 0).sum())
    return {
        "which": which, "n": n, "mean": float(values.mean()), "ci_low": float(low), "ci_high": float(high),
        "median": float(np.median(values)), "n_positive": positive, "n_zero": n - positive - negative,
        "n_negative": negative, "sign_test_p": sign_test(positive, negative),
    }


def _twice(acts: NeuronActivations) -> NeuronActivations:
    """The same activations stacked twice along the batch (each prompt scored for two tokens)."""
    return NeuronActivations(**{
        f.name: (getattr(acts, f.name) if f.name == "layers" or getattr(acts, f.name) is None
                 else torch.cat([getattr(acts, f.name)] * 2))
        for f in fields(acts)
    })


def _curve(rows: pd.DataFrame, n_layers: int) -> Float[Tensor, " n_layers"]:
    """C_w(l): the positive value-score mass of the top neurons in each layer."""
    mass = torch.zeros(n_layers, dtype=torch.float64)
    for layer, score in zip(rows.layer, rows.score):
        mass[int(layer)] += max(float(score), 0.0)
    return mass


def token_lag(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    bridge_targets: Sequence[str | int],
    answer_targets: Sequence[str | int],
    n_value_neurons: int = 100,
    batch_size: int = 8,
    progress: bool = False,
) -> BridgeLag:
    """Bridge and answer value curves at each prompt's last position, and their lags (module docstring).

    Shapes: one prompt, bridge target and answer target per case; targets are strings (first token, with a
    leading space) or token ids. Cases whose bridge and answer share their first token are dropped (their
    curves are identical).
    """
    prompts = list(prompts)
    if not len(prompts) == len(bridge_targets) == len(answer_targets):
        raise ValueError(f"got {len(prompts)} prompts, {len(bridge_targets)} bridges and {len(answer_targets)} answers")
    bridge_ids = target_token_ids(bridge, list(bridge_targets), len(prompts)).tolist()
    answer_ids = target_token_ids(bridge, list(answer_targets), len(prompts)).tolist()
    n_layers = bridge.cfg.n_layers
    curve_rows, lag_rows = [], []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="bridge lag", disable=not progress):
        sl = slice(start, start + batch_size)
        p, b_ids, a_ids = prompts[sl], bridge_ids[sl], answer_ids[sl]
        acts = neuron_activations(bridge, p)
        top = top_value_neurons(bridge, p + p, b_ids + a_ids, n_value_neurons, activations=_twice(acts))
        for i in range(len(p)):
            case = start + i
            if b_ids[i] == a_ids[i]:
                log.info("case %d: bridge and answer share their first token; dropped", case)
                continue
            peak, centre = {}, {}
            for token, row in (("bridge", i), ("answer", len(p) + i)):
                mass = _curve(top[top.prompt == row], n_layers)
                total = float(mass.sum())
                share = mass / total if total > 0 else mass
                peak[token] = int(mass.argmax()) if total > 0 else None
                centre[token] = float((share * torch.arange(n_layers)).sum()) if total > 0 else None
                curve_rows += [dict(case=case, token=token, layer=l, mass=float(mass[l]), share=float(share[l]))
                               for l in range(n_layers)]
            if None in peak.values():
                continue
            lag_rows.append(dict(
                case=case, prompt=p[i], bridge=bridge.tokenizer.decode([b_ids[i]]),
                answer=bridge.tokenizer.decode([a_ids[i]]),
                bridge_peak=peak["bridge"], answer_peak=peak["answer"], peak_lag=peak["answer"] - peak["bridge"],
                bridge_centre=centre["bridge"], answer_centre=centre["answer"],
                centre_lag=centre["answer"] - centre["bridge"],
                answer_is_top=int(acts.logits[i].argmax()) == a_ids[i],
            ))
    return BridgeLag(pd.DataFrame(curve_rows), pd.DataFrame(lag_rows))


def bridge_lag(
    bridge: TransformerBridge,
    cases: Sequence[MQuAKECase],
    ask: Callable[[MQuAKECase], str] | None = None,
    n_cases: int | None = None,
    n_value_neurons: int = 100,
    batch_size: int = 8,
    progress: bool = False,
) -> BridgeLag:
    """`token_lag` on the 2-hop cases among `cases` (the first `n_cases` of them): prompt = `ask(case)`
    (default the first question), bridge = the first hop's answer, answer = the case's answer."""
    two_hop = [c for c in cases if c.n_hops == 2][:n_cases]
    if not two_hop:
        raise ValueError("no 2-hop cases given")
    prompts = [ask(c) if ask else c.questions[0] for c in two_hop]
    return token_lag(
        bridge, prompts, [" " + c.single_hops[0].answer.strip() for c in two_hop],
        [" " + c.answer.strip() for c in two_hop], n_value_neurons, batch_size, progress,
    )
