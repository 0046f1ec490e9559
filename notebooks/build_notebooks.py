"""Write the tutorial notebooks from the cell lists below (outputs stripped): `python notebooks/build_notebooks.py`.

Keeping notebooks as code here keeps them reviewable in diffs; `tests/test_notebooks.py` executes every
notebook top to bottom (with ACE_NOTEBOOK_QUICK=1 for small settings).
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = '''import os
QUICK = os.environ.get("ACE_NOTEBOOK_QUICK") == "1"   # the test suite runs notebooks with small settings
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import ace_interp as ai
import pandas as pd
import torch
'''

NOTEBOOKS = {
    "01_qv_pathways_tour.ipynb": [
        ("md", "# Query → value pathways, neuron by neuron\n\nA tour of the attribution API on the real default "
               "model (SmolLM2-135M) and on a synthetic-world model, where the bridge entity of every multi-hop "
               "question is known. Formulas: `docs/attribution.md`."),
        ("code", SETUP),
        ("code", 'model = ai.load_model("smollm2-135m")\nprint(ai.model_spec(model))'),
        ("md", "## Value neurons: which neurons write ' Paris'?\n\n`I(v) = log p(w | x + v) − log p(w | x)` with the "
               "final norm's scale frozen at the real final residual's (the default)."),
        ("code", 'from ace_interp.attribution.value import top_value_neurons, value_scores\n'
                 'top = top_value_neurons(model, "The capital of France is", " Paris", k=20)\ntop.head(10)'),
        ("md", "Per-layer sums of all neuron scores (one exact sweep over all 46,080 neurons: a minute or two on a "
               "laptop CPU; skipped in quick mode)."),
        ("code", 'if not QUICK:\n    scores = value_scores(model, "The capital of France is", " Paris")\n'
                 '    import plotly.express as px\n'
                 '    px.bar(x=scores.layers, y=scores.layer_sums()[0].tolist(), labels={"x": "layer", "y": "Σ I(v)"}).show()'),
        ("md", "## Interpretable value neurons: project `fc2` onto the vocabulary"),
        ("code", 'from ace_interp.analysis.vocab import neuron_top_tokens\n'
                 'neuron_top_tokens(model, list(zip(top.layer[:5], top.neuron[:5])), k=8)'),
        ("md", "## Query neurons and the lag on a multi-hop question"),
        ("code", 'from ace_interp.analysis.pathways import pathway_curves\nfrom ace_interp import plotting\n'
                 'prompts = ["Q: What is the capital of the country where the Colosseum is located?\\nA: Rome\\n'
                 'Q: What is the capital of the country where the Eiffel Tower is located?\\nA:"]\n'
                 'curves = pathway_curves(model, prompts, [" Paris"], n_value_neurons=50, n_query_neurons=50)\n'
                 'print(curves.lags)\nplotting.query_value_curves(curves.mean_curves(), title="SmolLM2: Eiffel Tower → France → Paris")'),
        ("md", "## The same on a synthetic-world model (known bridge entities)"),
        ("code", 'from ace_interp.data.mquake import load_mquake\nfrom ace_interp.model.loading import ASSETS\n'
                 'toy = ai.load_model("toy-gptj")\ncases = load_mquake(ASSETS / "world" / "mquake_cases.json")[: 4 if QUICK else 40]\n'
                 'print(cases[0].questions[0], "->", cases[0].answer, "| bridge:", cases[0].extra["bridge_entities"])\n'
                 'toy_curves = pathway_curves(toy, [c.questions[0] for c in cases], [" " + c.answer for c in cases])\n'
                 'print("lag distribution (value peak − query peak):")\nprint(toy_curves.lag_distribution())\n'
                 'plotting.query_value_curves(toy_curves.mean_curves(), title="toy GPT-J: query vs value neurons")'),
    ],
    "02_paper_figures.ipynb": [
        ("md", "# Reproducing the paper's analyses on the synthetic world (both architectures)\n\n"
               "`make_figures` computes every analysis on a case file and writes HTML/PNG/CSV; the same runs from "
               "the shell as `ace figures`. Quick mode uses a handful of prompts."),
        ("code", SETUP),
        ("code", 'from ace_interp.analysis.figures import FigureConfig, make_figures\nfrom ace_interp.data.mquake import load_mquake\n'
                 'from ace_interp.model.loading import ASSETS\nimport tempfile, json\n'
                 'cases = load_mquake(ASSETS / "world" / "mquake_cases.json")\n'
                 'config = FigureConfig.quick() if QUICK else FigureConfig()\n'
                 'out = tempfile.mkdtemp() if QUICK else "../figures"'),
        ("code", 'summaries = {}\nshipped = [n for n in ["toy-gptj", "toy-qwen3"] if (ASSETS / n / "config.json").exists()]\nfor name in shipped:\n    model = ai.load_model(name)\n'
                 '    summaries[name] = make_figures(model, cases[: 40 if QUICK else 200], f"{out}/{name}", config)\n'
                 'print(json.dumps(summaries, indent=1, default=str))'),
        ("md", "Knowledge types live in consistent layers: the value-layer heatmap per relation."),
        ("code", 'from ace_interp import plotting\nscores = pd.read_csv(f"{out}/toy-gptj/layer_scores.csv")\n'
                 'plotting.layer_heatmap(scores[scores.kind == "value"], title="toy GPT-J: value layers by relation")'),
        ("md", "Zeroing the top 1% value neurons vs a random 1%:"),
        ("code", 'abl = pd.read_csv(f"{out}/toy-gptj/ablation.csv")\n'
                 'abl.groupby(["relation", "condition"]).accuracy_drop.mean().unstack()'),
    ],
    "03_editing_walkthrough.ipynb": [
        ("md", "# Editing: PMET vs ACE, before/after, undo, save\n\nEvery editor writes the wrapped HF model's "
               "real `W_out` weights through a transactional write that can be undone bit for bit."),
        ("code", SETUP),
        ("code", 'from ace_interp.editing import EditRequest, edit, default_hparams\nfrom ace_interp.editing.hparams import small_budget\n'
                 'from ace_interp.evaluation.answers import generate_greedy\nfrom ace_interp.data.prompts import few_shot_prompt, real_demonstrations\n'
                 'model = ai.load_model("smollm2-135m")\n'
                 'request = EditRequest("{} is located in the country of", "The Eiffel Tower", "Italy", "France")\n'
                 'question = few_shot_prompt("What is the capital of the country where the Eiffel Tower is located?", real_demonstrations()[:4])\n'
                 'def ask():\n    return generate_greedy(model, [request.text, question], max_new_tokens=4)\nprint("before:", ask())\n'
                 '# quick mode (the test suite): a small optimisation/covariance budget\n'
                 'def hparams(method):\n    hp = default_hparams(method, model)\n    return small_budget(hp) if QUICK else hp'),
        ("code", 'snapshot = {k: v.clone() for k, v in ai.model.hf_parameters(model).items()}\n'
                 'for method in ["pmet", "ace"]:\n    applied = edit(model, [request], method=method, hparams=hparams(method))\n'
                 '    print(method, "layers", applied.layers, f"{applied.seconds:.1f}s ->", ask())\n    applied.undo()\n'
                 'print("undo exact:", all(torch.equal(v, snapshot[k]) for k, v in ai.model.hf_parameters(model).items()))'),
        ("md", "Save an edited model as a plain HF checkpoint (and reload it)."),
        ("code", 'import tempfile\napplied = edit(model, [request], method="pmet", hparams=hparams("pmet"))\nfolder = ai.save_model(model, tempfile.mkdtemp() + "/edited")\n'
                 'applied.undo()\nreloaded = ai.load_model(folder)\nprint(generate_greedy(reloaded, [request.text], max_new_tokens=3))'),
    ],
    "04_real_hub_models.ipynb": [
        ("md", "# Running ace-interp on a real hub model (GPT-2, GPT-J, Qwen3, …)\n\n"
               "Where a hub (or a populated HF cache) is reachable, `ai.load_model(\"gpt2\")` or "
               "`ai.load_model(\"Qwen/Qwen3-8B\", dtype=torch.bfloat16, device_map=\"auto\")` loads the model into a "
               "TransformerBridge; everything else is the same. Offline, this notebook runs the same steps on a tiny "
               "random-initialised model built from a config, so it always executes."),
        ("code", SETUP),
        ("code", 'from ace_interp.model.random_init import build_random_model\nimport tempfile\n'
                 'HUB_MODEL = os.environ.get("ACE_HUB_MODEL")  # e.g. "gpt2" or "EleutherAI/gpt-j-6b"\n'
                 'if HUB_MODEL:\n    model = ai.load_model(HUB_MODEL, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32,\n'
                 '                          **({"device_map": "auto"} if torch.cuda.device_count() > 1 else {}))\n'
                 'else:\n    model = ai.load_model(build_random_model("qwen3", tempfile.mkdtemp() + "/tiny-qwen3"))\n'
                 'print(ai.model_spec(model))'),
        ("code", 'from ace_interp.attribution.layers import rank_layers\n'
                 'prompt, target = ("The capital of France is", " Paris") if HUB_MODEL else ("the capital of france is", " paris")\n'
                 'ranking = rank_layers(model, [prompt], [target], top_k_layers=3)\nprint("value layers", ranking.value_layers, "query layers", ranking.query_layers)'),
        ("code", 'from ace_interp.editing import EditRequest, edit\n'
                 'request = EditRequest("The capital of {} is", "France", "Rome", "Paris") if HUB_MODEL else EditRequest("the capital of {} is", "france", "rome", "paris")\n'
                 'applied = edit(model, [request], method="pmet")\nprint("edited layers", applied.layers)\napplied.undo()'),
    ],
}


def build() -> list[Path]:
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = HERE / name
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print("wrote", p)
