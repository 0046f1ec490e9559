"""Interactive neuron ablation: a plain class (tested directly) and a Jupyter widget on top of it.

    explorer = AblationExplorer(model, "The capital of France is", target=" Paris")
    explorer.select_top_value(20)             # or select_top_query / select_random / select_ids / select_ranks
    state = explorer.state()                  # next-token table, target prob/rank, downstream value neurons
    explorer.widget()                         # in Jupyter: the same, live (ipywidgets + plotly FigureWidget)
    explorer.export_html("sweep.html", sizes=[1, 5, 20, 100])   # standalone report of an ablation sweep

Ablations go through `ace_interp.ablation.ablate_neurons` (hooks on `blocks.{l}.mlp.hook_post`); no
weight is touched. "Activated value neurons" downstream are neurons whose frozen-norm value score for
the target exceeds `threshold` (exact, `value_neurons_above`), counted per layer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import plotly.graph_objects as go
import torch
from transformer_lens.model_bridge import TransformerBridge

from ace_interp.ablation import ablate_neurons, mean_activations
from ace_interp.attribution.query import query_scores
from ace_interp.attribution.value import target_token_ids, top_value_neurons, value_neurons_above
from ace_interp.model import neuron_activations
from ace_interp.plotting import TEMPLATE, QUERY_COLOR, RANDOM_COLOR, VALUE_COLOR

log = logging.getLogger(__name__)


@dataclass
class ExplorerState:
    """What the model does with the current ablation (and without it, for comparison)."""

    neurons: dict[int, list[int]]
    mode: str
    target: str
    target_prob: float
    target_rank: int  # 1 = the greedy next token
    baseline_prob: float
    baseline_rank: int
    next_tokens: pd.DataFrame  # token, prob, baseline_prob (top tokens under ablation)
    activated_value_neurons: pd.DataFrame = field(default_factory=pd.DataFrame)  # layer, before, after

    @property
    def n_ablated(self) -> int:
        return sum(len(v) for v in self.neurons.values())


class AblationExplorer:
    """Pick a prompt, a neuron set and an ablation mode; read off what changes."""

    def __init__(
        self,
        bridge: TransformerBridge,
        prompt: str,
        target: str | int | None = None,
        position: int = -1,
        threshold: float = 0.1,
        n_candidates: int = 200,
        top_tokens: int = 10,
    ):
        self.bridge = bridge
        self.position = position
        self.threshold = threshold
        self.n_candidates = n_candidates
        self.top_tokens = top_tokens
        self.mode: Literal["zero", "mean"] = "zero"
        self.neurons: dict[int, list[int]] = {}
        self._mean_values = None
        self.set_prompt(prompt, target)

    # ------------------------------------------------------------------ prompt and scores

    def set_prompt(self, prompt: str, target: str | int | None = None) -> None:
        """Change the prompt (and target; default: the model's own greedy next token)."""
        self.prompt = prompt
        acts = neuron_activations(self.bridge, prompt, self.position)
        if target is None:
            target = int(acts.logits[0].argmax())
        self.target_id = int(target_token_ids(self.bridge, [target], 1)[0])
        self.target = self.bridge.tokenizer.decode([self.target_id])
        self._baseline_acts = acts
        self._value_table = top_value_neurons(
            self.bridge, prompt, [self.target_id], self.n_candidates, self.position, activations=acts
        )
        self._query = None  # computed on first use (needs the value neurons)
        self.neurons = {}

    @property
    def value_ranking(self) -> pd.DataFrame:
        """The prompt's top value neurons: layer, neuron, score, rank."""
        return self._value_table.drop(columns="prompt")

    def query_ranking(self, layer: int | None = None) -> pd.DataFrame:
        """Top query neurons (positive aggregate score against the top value neurons), optionally of one layer."""
        if self._query is None:
            self._query = query_scores(
                self.bridge, self.prompt, [self.target_id], positions=self.position,
                value_neurons=self._value_table, activations=self._baseline_acts,
            )
        table = self._query.top(self.bridge.cfg.n_layers * self.bridge.cfg.d_mlp, 0)
        table = table[table.score > 0]
        return table if layer is None else table[table.layer == layer].reset_index(drop=True)

    # ------------------------------------------------------------------ selection

    def _set(self, pairs: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
        neurons: dict[int, list[int]] = {}
        for layer, k in pairs:
            neurons.setdefault(int(layer), []).append(int(k))
        self.neurons = neurons
        return neurons

    def select_top_value(self, k: int, layers: Sequence[int] | None = None) -> dict[int, list[int]]:
        table = self.value_ranking
        if layers is not None:
            table = table[table.layer.isin(list(layers))]
        return self._set(zip(table.layer[:k], table.neuron[:k]))

    def select_ranks(self, ranks: Sequence[int]) -> dict[int, list[int]]:
        """Value neurons by rank (1 = highest value score)."""
        table = self.value_ranking.set_index("rank")
        missing = [r for r in ranks if r not in table.index]
        if missing:
            raise IndexError(f"ranks {missing} are beyond the {len(table)} candidate value neurons")
        return self._set([(table.loc[r, "layer"], table.loc[r, "neuron"]) for r in ranks])

    def select_top_query(self, k: int, layer: int | None = None) -> dict[int, list[int]]:
        table = self.query_ranking(layer)
        return self._set(zip(table.layer[:k], table.neuron[:k]))

    def select_random(self, k: int, seed: int = 0, layers: Sequence[int] | None = None) -> dict[int, list[int]]:
        """A random control set of k neurons (from `layers`, default all)."""
        layers = list(range(self.bridge.cfg.n_layers)) if layers is None else list(layers)
        d_mlp = self.bridge.cfg.d_mlp
        g = torch.Generator().manual_seed(seed)
        flat = torch.randperm(len(layers) * d_mlp, generator=g)[:k].tolist()
        return self._set([(layers[i // d_mlp], i % d_mlp) for i in flat])

    def select_ids(self, neurons: Mapping[int, Sequence[int]]) -> dict[int, list[int]]:
        return self._set([(l, k) for l, ks in neurons.items() for k in ks])

    def clear(self) -> None:
        self.neurons = {}

    def set_mode(self, mode: Literal["zero", "mean"]) -> None:
        """Zero ablation, or mean ablation (mean coefficient over the prompt's own tokens)."""
        if mode not in ("zero", "mean"):
            raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
        if mode == "mean" and self._mean_values is None:
            self._mean_values = mean_activations(self.bridge, self.prompt)
        self.mode = mode

    # ------------------------------------------------------------------ reading off the effect

    def _distribution(self) -> torch.Tensor:
        acts = neuron_activations(self.bridge, self.prompt, self.position)
        return acts.logits[0].float().softmax(-1), acts

    def _active_counts(self, acts) -> pd.Series:
        table = value_neurons_above(self.bridge, self.prompt, [self.target_id], self.threshold, self.position, activations=acts)
        return table.groupby("layer").size().reindex(range(self.bridge.cfg.n_layers), fill_value=0)

    def state(self, count_value_neurons: bool = True) -> ExplorerState:
        """Run the prompt with the current ablation and report the effect against the baseline."""
        base_probs = self._baseline_acts.logits[0].float().softmax(-1)
        with ablate_neurons(self.bridge, self.neurons, self.mode, self._mean_values):
            probs, acts = self._distribution()
            after = self._active_counts(acts) if count_value_neurons else None
        top = probs.topk(self.top_tokens)
        tokens = pd.DataFrame(
            {
                "token": [self.bridge.tokenizer.decode([i]) for i in top.indices.tolist()],
                "prob": top.values.tolist(),
                "baseline_prob": base_probs[top.indices].tolist(),
            }
        )
        counts = pd.DataFrame()
        if count_value_neurons:
            before = self._active_counts(self._baseline_acts)
            counts = pd.DataFrame({"layer": before.index, "before": before.values, "after": after.values})
        rank = lambda p: int((p > p[self.target_id]).sum()) + 1  # noqa: E731
        return ExplorerState(
            neurons=dict(self.neurons), mode=self.mode, target=self.target,
            target_prob=float(probs[self.target_id]), target_rank=rank(probs),
            baseline_prob=float(base_probs[self.target_id]), baseline_rank=rank(base_probs),
            next_tokens=tokens, activated_value_neurons=counts,
        )

    def sweep(self, sizes: Sequence[int] = (1, 5, 10, 20, 50), seeds: Sequence[int] = (0, 1, 2)) -> pd.DataFrame:
        """Target probability when ablating the top-n value neurons vs random n-neuron sets, for each n."""
        saved = dict(self.neurons)
        rows = []
        for n in sizes:
            self.select_top_value(n)
            rows.append({"n_neurons": n, "selection": "top value", "seed": None,
                         "target_prob": self.state(count_value_neurons=False).target_prob})
            for seed in seeds:
                self.select_random(n, seed)
                rows.append({"n_neurons": n, "selection": "random", "seed": seed,
                             "target_prob": self.state(count_value_neurons=False).target_prob})
        self.neurons = saved
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ figures, report, widget

    def figures(self, state: ExplorerState | None = None) -> tuple[go.Figure, go.Figure]:
        state = state or self.state()
        tokens = go.Figure(layout={"template": TEMPLATE, "title": f"next token after ablating {state.n_ablated} neurons ({state.mode})", "barmode": "group"})
        tokens.add_bar(x=state.next_tokens.token, y=state.next_tokens.baseline_prob, name="baseline", marker_color=RANDOM_COLOR)
        tokens.add_bar(x=state.next_tokens.token, y=state.next_tokens.prob, name="ablated", marker_color=VALUE_COLOR)
        counts = go.Figure(layout={"template": TEMPLATE, "title": f"activated value neurons for {state.target!r} (score > {self.threshold})", "barmode": "group"})
        c = state.activated_value_neurons
        if not c.empty:
            counts.add_bar(x=c.layer, y=c.before, name="before", marker_color=QUERY_COLOR)
            counts.add_bar(x=c.layer, y=c.after, name="after", marker_color=VALUE_COLOR)
        return tokens, counts

    def export_html(self, path: str | Path, sizes: Sequence[int] = (1, 5, 10, 20, 50), seeds: Sequence[int] = (0, 1, 2)) -> Path:
        """A standalone HTML report: the sweep (top value vs random) and the current ablation's effect."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep = self.sweep(sizes, seeds)
        summary = sweep.groupby(["n_neurons", "selection"])["target_prob"].mean().unstack()
        fig = go.Figure(layout={"template": TEMPLATE, "title": f"p({self.target!r}) when ablating n neurons"})
        for sel, color in (("top value", VALUE_COLOR), ("random", RANDOM_COLOR)):
            fig.add_scatter(x=summary.index, y=summary[sel], mode="lines+markers", name=sel, line_color=color)
        fig.update_xaxes(title="neurons ablated", type="log")
        fig.update_yaxes(title="target probability")
        tokens, counts = self.figures()
        parts = [
            f"<h1>Ablation sweep</h1><p>Prompt: <code>{self.prompt}</code> → target <code>{self.target!r}</code>; mode {self.mode}.</p>",
            fig.to_html(full_html=False, include_plotlyjs=True),
            sweep.to_html(index=False, float_format=lambda x: f"{x:.4f}"),
            "<h2>Current selection</h2>",
            tokens.to_html(full_html=False, include_plotlyjs=False),
            counts.to_html(full_html=False, include_plotlyjs=False),
        ]
        path.write_text("<html><head><meta charset='utf-8'></head><body>" + "\n".join(parts) + "</body></html>")
        return path

    def widget(self):  # pragma: no cover - needs a live Jupyter front end; the logic above is tested
        """An ipywidgets panel: selection method, k, layer, mode; live next-token and value-neuron plots."""
        import ipywidgets as w

        prompt = w.Text(value=self.prompt, description="prompt", layout=w.Layout(width="60%"))
        method = w.Dropdown(options=["top value", "top query", "random", "value ranks", "none"], value="top value", description="select")
        k = w.IntSlider(value=10, min=1, max=self.n_candidates, description="k")
        layer = w.Dropdown(options=["all", *range(self.bridge.cfg.n_layers)], value="all", description="layer")
        ranks = w.Text(value="1,2,3", description="ranks")
        mode = w.ToggleButtons(options=["zero", "mean"], value=self.mode, description="mode")
        info = w.HTML()
        tokens_fig, counts_fig = (go.FigureWidget(f) for f in self.figures(self.state()))

        def refresh(*_):
            if prompt.value != self.prompt:
                self.set_prompt(prompt.value)
            only = None if layer.value == "all" else [int(layer.value)]
            if method.value == "top value":
                self.select_top_value(k.value, only)
            elif method.value == "top query":
                self.select_top_query(k.value, None if only is None else only[0])
            elif method.value == "random":
                self.select_random(k.value, 0, only)
            elif method.value == "value ranks":
                self.select_ranks([int(r) for r in ranks.value.split(",") if r.strip()])
            else:
                self.clear()
            self.set_mode(mode.value)
            state = self.state()
            new_tokens, new_counts = self.figures(state)
            with tokens_fig.batch_update():
                tokens_fig.data = ()
                tokens_fig.add_traces(new_tokens.data)
                tokens_fig.layout.title = new_tokens.layout.title
            with counts_fig.batch_update():
                counts_fig.data = ()
                counts_fig.add_traces(new_counts.data)
            info.value = (
                f"<b>{state.n_ablated}</b> neurons ablated · p({state.target!r}) {state.baseline_prob:.3f} → "
                f"<b>{state.target_prob:.3f}</b> · rank {state.baseline_rank} → <b>{state.target_rank}</b>"
            )

        for control in (prompt, method, k, layer, ranks, mode):
            control.observe(refresh, names="value")
        refresh()
        return w.VBox([prompt, w.HBox([method, k, layer]), w.HBox([ranks, mode]), info, tokens_fig, counts_fig])
