"""Plotly figures for every analysis, returned as figure objects and saved as HTML (+ PNG via kaleido).

Each function takes the pandas DataFrame its analysis returns (columns named in the docstring) so a
notebook can call it on any result; `save_figure` writes `<name>.html` and `<name>.png`.

PNG export uses kaleido 0.2.1 (the `figures` extra), which ships its own Chromium, so it works on a machine
with no system browser. Plotly >= 6 only drives kaleido >= 1 (which needs a system Chrome), so with 0.2.1 we
call kaleido's own `PlotlyScope` on the figure's JSON, giving it the plotly.js that the plotly package bundles.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly
import plotly.express as px
import plotly.graph_objects as go

log = logging.getLogger(__name__)

TEMPLATE = "plotly_white"
QUERY_COLOR, VALUE_COLOR, RANDOM_COLOR = "#1f77b4", "#d62728", "#7f7f7f"


PNG_SIZE = {"width": 900, "height": 520, "scale": 1.5}
# a PNG takes well under a second; kaleido 0.2.1 reads its Chromium's answer with a blocking readline and no
# timeout, so a renderer that stalls (seen once under heavy load) would hang the whole run without this bound
PNG_TIMEOUT_S = 60.0


@functools.cache
def _bundled_chromium_scope():
    """kaleido 0.2.1's `PlotlyScope` (its own Chromium, no network: no MathJax), or None with kaleido >= 1 / none.

    Cached because starting the bundled Chromium takes ~2 s; one process serves every figure of a run.
    """
    try:
        major = int(importlib.metadata.version("kaleido").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return None
    if major >= 1:
        return None
    from kaleido.scopes.plotly import PlotlyScope

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return PlotlyScope(plotlyjs=str(plotly_js), mathjax=False)


def write_png(fig: go.Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (900×520 at scale 1.5) at `path`, through kaleido 0.2.1's bundled Chromium if present.

    >>> write_png(go.Figure(go.Scatter(x=[0, 1], y=[1, 0])), "/tmp/line.png")  # doctest: +SKIP
    PosixPath('/tmp/line.png')
    """
    path = Path(path)
    scope = _bundled_chromium_scope()
    if scope is None:  # kaleido >= 1: plotly drives it (needs a system Chrome/Chromium)
        fig.write_image(path, **PNG_SIZE)
    else:
        path.write_bytes(transform_within(scope, fig.to_plotly_json(), PNG_TIMEOUT_S))
    return path


def transform_within(scope, figure_json: dict, timeout_s: float) -> bytes:
    """`scope.transform(figure_json)` as PNG bytes, or TimeoutError after `timeout_s` with the renderer stopped.

    The transform runs in a daemon thread; on time-out the renderer process (kaleido 0.2.1 keeps it in
    `scope._proc`, base.py) is killed, which ends the thread's blocked read, and the next call starts a new one.
    """
    answer: dict[str, object] = {}

    def work():
        try:
            answer["png"] = scope.transform(figure_json, format="png", **PNG_SIZE)
        except Exception as e:  # handed to the caller's thread below
            answer["error"] = e

    thread = threading.Thread(target=work, name="kaleido-png", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        proc = getattr(scope, "_proc", None)
        if proc is not None:
            proc.kill()  # not scope._shutdown_kaleido(): it waits for the lock the stalled transform holds
        thread.join(5.0)
        raise TimeoutError(f"the PNG renderer gave no answer in {timeout_s:.0f} s and was stopped")
    if "error" in answer:
        raise answer["error"]
    return answer["png"]


def save_figure(fig: go.Figure, folder: str | Path, name: str, png: bool = True) -> list[Path]:
    """Write `folder/name.html` (self-contained) and, if possible, `folder/name.png`; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / f"{name}.html"]
    fig.write_html(written[0], include_plotlyjs=True)  # self-contained: opens offline
    if png:
        try:
            written.append(write_png(fig, folder / f"{name}.png"))
        except Exception as e:  # kaleido without a Chrome/Chromium: HTML only, said once per figure
            log.warning("PNG export of %s skipped (%s: %s); HTML written", name, type(e).__name__, str(e)[:120])
    return written


def layer_heatmap(
    df: pd.DataFrame, row: str = "relation", column: str = "layer", value: str = "score", title: str = ""
) -> go.Figure:
    """Heatmap of `value` by `row` (e.g. relation / knowledge type) × `column` (layer).

    Rows of `df`: one per (row, column) pair, or many (they are averaged).
    """
    table = df.pivot_table(index=row, columns=column, values=value, aggfunc="mean").sort_index()
    fig = px.imshow(
        table, aspect="auto", color_continuous_scale="RdBu_r", color_continuous_midpoint=0.0,
        labels={"x": column, "y": row, "color": value}, title=title, template=TEMPLATE,
    )
    return fig


def query_value_curves(df: pd.DataFrame, title: str = "", lag: float | None = None) -> go.Figure:
    """Per-layer query and value activation curves (columns: layer, query, value), lag annotated."""
    fig = go.Figure(layout={"template": TEMPLATE, "title": title})
    fig.add_scatter(x=df["layer"], y=df["query"], mode="lines+markers", name="query neurons", line_color=QUERY_COLOR)
    fig.add_scatter(x=df["layer"], y=df["value"], mode="lines+markers", name="value neurons", line_color=VALUE_COLOR)
    q_peak = df.loc[df["query"].idxmax(), "layer"]
    v_peak = df.loc[df["value"].idxmax(), "layer"]
    fig.add_vline(x=q_peak, line_dash="dot", line_color=QUERY_COLOR)
    fig.add_vline(x=v_peak, line_dash="dot", line_color=VALUE_COLOR)
    lag = v_peak - q_peak if lag is None else lag
    fig.add_annotation(x=(q_peak + v_peak) / 2, y=1.05, yref="paper", text=f"lag = {lag:g} layers", showarrow=False)
    fig.update_xaxes(title="layer", dtick=1)
    fig.update_yaxes(title="activation (normalised)")
    return fig


def lag_histogram(lags: Sequence[float] | pd.Series, title: str = "") -> go.Figure:
    """Distribution of value-peak minus query-peak layer over a dataset."""
    s = pd.Series(list(lags), name="lag")
    fig = px.histogram(s, x="lag", title=title, template=TEMPLATE, color_discrete_sequence=[QUERY_COLOR])
    fig.update_xaxes(title="value peak − query peak (layers)", dtick=1)
    return fig


def ablation_bars(df: pd.DataFrame, title: str = "") -> go.Figure:
    """Accuracy drop per group for each ablation condition.

    Columns: `group` (e.g. relation), `condition` (e.g. "top 1% value", "random 1%"), `drop`
    (mean accuracy drop) and optionally `drop_std` (spread over seeds).
    """
    # random controls grey, whatever order the conditions come in (a groupby sorts "random" before "top")
    conditions = sorted(df["condition"].unique(), key=lambda c: str(c).startswith("random"))
    colors = {c: (RANDOM_COLOR if str(c).startswith("random") else VALUE_COLOR) for c in conditions}
    fig = px.bar(
        df, x="group", y="drop", color="condition", barmode="group", title=title, template=TEMPLATE,
        error_y="drop_std" if "drop_std" in df else None, color_discrete_map=colors,
        category_orders={"condition": conditions},
    )
    fig.update_yaxes(title="accuracy drop", tickformat=".0%")
    return fig


def knockout_counts(df: pd.DataFrame, title: str = "") -> go.Figure:
    """Activated value neurons per layer before vs after a query-neuron knockout (columns: layer, before, after)."""
    fig = go.Figure(layout={"template": TEMPLATE, "title": title, "barmode": "group"})
    fig.add_bar(x=df["layer"], y=df["before"], name="before knockout", marker_color=VALUE_COLOR)
    fig.add_bar(x=df["layer"], y=df["after"], name="after knockout", marker_color=RANDOM_COLOR)
    fig.update_xaxes(title="layer", dtick=1)
    fig.update_yaxes(title="activated value neurons")
    return fig


def edit_comparison(df: pd.DataFrame, metric: str = "multi_hop_accuracy", title: str = "") -> go.Figure:
    """Bars of an evaluation metric by method and number of edits (columns: method, n_edits, metric)."""
    fig = px.bar(df, x="n_edits", y=metric, color="method", barmode="group", title=title, template=TEMPLATE)
    fig.update_xaxes(title="edits per case", dtick=1)
    fig.update_yaxes(tickformat=".0%")
    return fig
