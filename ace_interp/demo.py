"""`ace demo`: the end-to-end tour on the real default model (SmolLM2-135M), offline.

1. load the model and print its neuron-level summary;
2. ask a real multi-hop question (the capital of the country where the Eiffel Tower is);
3. find its value and query layers and neurons, and the bridge lag (does ' France' surface before ' Paris'?);
4. edit the first-hop fact (Eiffel Tower → Italy) with PMET and with ACE, showing the multi-hop answer and
   the probabilities of the old and new answers before and after each, undoing each edit (bit-exact);
5. write figures and a results table under `out`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

log = logging.getLogger(__name__)

DEMONSTRATIONS = (
    "Q: What is the capital of the country where the Colosseum is located?\nA: Rome\n"
    "Q: What is the official language of the country whose capital is Berlin?\nA: German\n"
)
QUESTION = "What is the capital of the country where the Eiffel Tower is located?"
MULTI_HOP_PROMPT = DEMONSTRATIONS + f"Q: {QUESTION}\nA:"
FIRST_HOP = {"prompt": "The Eiffel Tower is located in the country of", "subject": "The Eiffel Tower",
             "target_true": "France", "target_new": "Italy"}
OLD_ANSWER, NEW_ANSWER = "Paris", "Rome"


@dataclass
class DemoConfig:
    model: str = "smollm2-135m"
    out: Path = Path("outputs/demo")
    device: str | None = None
    quick: bool = False  # smaller budgets, for tests


def _probe(bridge) -> dict:
    """The multi-hop answer and the probabilities of the old and new answers (first token)."""
    from ace_interp.evaluation.answers import generate_greedy, target_scores

    answer = generate_greedy(bridge, [MULTI_HOP_PROMPT], max_new_tokens=4)[0].strip()
    first_hop = generate_greedy(bridge, [FIRST_HOP["prompt"]], max_new_tokens=3)[0].strip()
    scores = target_scores(bridge, [MULTI_HOP_PROMPT] * 2, [OLD_ANSWER, NEW_ANSWER])
    return {"multi_hop_answer": answer, "first_hop_answer": first_hop,
            f"p({OLD_ANSWER})": float(scores["first_token_prob"][0]), f"p({NEW_ANSWER})": float(scores["first_token_prob"][1])}


def _hparams(bridge, method: str, quick: bool):
    from ace_interp.editing import default_hparams
    from ace_interp.editing.hparams import small_budget

    hp = default_hparams(method, bridge)
    return small_budget(hp) if quick else hp  # quick: the test checks the plumbing, not quality


def run_demo(config: DemoConfig) -> Path:
    from ace_interp import plotting
    from ace_interp.analysis.bridge_lag import token_lag
    from ace_interp.analysis.pathways import curves_from_table
    from ace_interp.attribution.layers import rank_layers
    from ace_interp.editing import EditRequest, edit
    from ace_interp.model import hf_parameters, load_model, model_spec

    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/5] Loading {config.model} ...")
    bridge = load_model(config.model, device=config.device)
    print(model_spec(bridge).summary())

    print(f"\n[2/5] Multi-hop question: {QUESTION}")
    before = _probe(bridge)
    print(f"  model answers {before['multi_hop_answer']!r}; p({OLD_ANSWER}) = {before[f'p({OLD_ANSWER})']:.3f}")

    print("\n[3/5] Where is it stored? Value and query neurons (frozen-norm attribution)")
    n_neurons = 30 if config.quick else 100
    ranking = rank_layers(bridge, [MULTI_HOP_PROMPT, FIRST_HOP["prompt"]], [" " + OLD_ANSWER, " " + FIRST_HOP["target_true"]],
                          relations=["2-hop question", "first hop"], n_value_neurons=n_neurons, n_query_neurons=n_neurons)
    table = ranking.table
    for relation in ("2-hop question", "first hop"):
        print(f"  {relation}: value layers {ranking.layers('value', relation, 3)}, query layers {ranking.layers('query', relation, 3)}")
    top_values = table[(table.relation == "2-hop question") & (table.kind == "value")].head(5)
    print("  top value neurons for ' Paris':", ", ".join(f"L{l} n{n} (+{s:.2f})" for l, n, s in zip(top_values.layer, top_values.neuron, top_values.score)))
    # the lag that could come out either way: value curves of the bridge entity and of the answer (analysis.bridge_lag)
    lag = token_lag(bridge, [MULTI_HOP_PROMPT], [" " + FIRST_HOP["target_true"]], [" " + OLD_ANSWER],
                    n_value_neurons=n_neurons).lags.iloc[0]
    print(f"  bridge lag (value curves, last position): the bridge '{FIRST_HOP['target_true']}' peaks at layer "
          f"{lag.bridge_peak}, the answer '{OLD_ANSWER}' at layer {lag.answer_peak}: lag {lag.peak_lag:+d} layers "
          f"(answer peak − bridge peak; centres of mass {lag.centre_lag:+.1f})")
    curves = curves_from_table(table[table.relation == "2-hop question"], bridge.cfg.n_layers)
    view = curves.lags.iloc[0]
    print(f"  query-score view (query neurons count only value neurons of later layers, so they precede them by "
          f"construction): query peak layer {view.query_peak}, value peak layer {view.value_peak}")
    table.to_csv(out / "attribution_table.csv", index=False)
    plotting.save_figure(plotting.query_value_curves(curves.mean_curves(), title=f"{QUESTION} → {OLD_ANSWER}"), out, "pathway_curves")

    print(f"\n[4/5] Edit the first hop: {FIRST_HOP['prompt']} {FIRST_HOP['target_true']} → {FIRST_HOP['target_new']}")
    request = EditRequest.from_rewrite(FIRST_HOP)
    snapshot = {k: v.detach().clone() for k, v in hf_parameters(bridge).items()}
    rows = [{"stage": "before", **before}]
    for method in ("pmet", "ace"):
        applied = edit(bridge, [request], method, _hparams(bridge, method, config.quick))
        after = _probe(bridge)
        applied.undo()
        exact = all(torch.equal(v, snapshot[k]) for k, v in hf_parameters(bridge).items())
        rows.append({"stage": f"after {method}", **after, "edit_seconds": round(applied.seconds, 1), "layers": applied.layers, "undo_exact": exact})
        print(f"  {method.upper():5s} layers {applied.layers} ({applied.seconds:.0f} s): first hop → {after['first_hop_answer']!r}, "
              f"2-hop answer {after['multi_hop_answer']!r}, p({OLD_ANSWER}) {before[f'p({OLD_ANSWER})']:.3f} → {after[f'p({OLD_ANSWER})']:.3f}, "
              f"p({NEW_ANSWER}) {before[f'p({NEW_ANSWER})']:.3f} → {after[f'p({NEW_ANSWER})']:.3f}; undone exactly: {exact}")

    print("\n[5/5] Writing the results table and figures")
    results = pd.DataFrame(rows)
    results.to_csv(out / "results.csv", index=False)
    long = results.melt(id_vars="stage", value_vars=[f"p({OLD_ANSWER})", f"p({NEW_ANSWER})"], var_name="answer", value_name="prob")
    fig = plotting.px.bar(long, x="stage", y="prob", color="answer", barmode="group", template=plotting.TEMPLATE,
                          title=f"{QUESTION} (first hop edited to {FIRST_HOP['target_new']})")
    plotting.save_figure(fig, out, "edit_probabilities")
    (out / "summary.json").write_text(json.dumps({"seconds": round(time.perf_counter() - start, 1), "rows": rows}, indent=1, default=str))
    print(results.to_string(index=False))
    print(f"\nDone in {time.perf_counter() - start:.0f} s.")
    return out
