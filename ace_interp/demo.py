"""`ace demo`: the end-to-end tour on the real default model (SmolLM2-135M), offline.

Steps grow with the toolkit: model summary → a real multi-hop question → value/query layers → edit with
PMET and ACE → answers before/after → undo → figures and a results table under `out`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

MULTI_HOP_QUESTION = (
    "Q: What is the capital of the country where the Colosseum is located?\nA: Rome\n"
    "Q: What is the official language of the country whose capital is Berlin?\nA: German\n"
    "Q: What is the capital of the country where the Eiffel Tower is located?\nA:"
)


@dataclass
class DemoConfig:
    model: str = "smollm2-135m"
    out: Path = Path("outputs/demo")
    device: str | None = None
    quick: bool = False  # smaller budgets, for tests


def run_demo(config: DemoConfig) -> Path:
    from ace_interp.cli import model_summary
    from ace_interp.evaluation.answers import generate_greedy
    from ace_interp.model import load_model, model_spec

    config.out.mkdir(parents=True, exist_ok=True)
    print(f"Loading {config.model} ...")
    bridge = load_model(config.model, device=config.device)
    print(model_summary(bridge))

    answer = generate_greedy(bridge, [MULTI_HOP_QUESTION], max_new_tokens=4)[0].strip()
    print(f"\nMulti-hop question: {MULTI_HOP_QUESTION.splitlines()[-2]}\nModel answers: {answer}")

    spec = model_spec(bridge)
    summary = pd.DataFrame([{**spec.__dict__, "n_neurons": spec.n_neurons, "multi_hop_answer": answer}])
    summary.to_csv(config.out / "model_summary.csv", index=False)
    return config.out
