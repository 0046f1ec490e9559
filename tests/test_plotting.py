"""Figures build from analysis tables and save as non-empty HTML and PNG, with no system Chrome/Chromium."""

import importlib.metadata
import os
import shutil
import time

import pandas as pd
import pytest

from ace_interp import plotting


def test_figures_build_and_save(tmp_path):
    heat = pd.DataFrame({"relation": ["P36", "P36", "P30", "P30"], "layer": [0, 1, 0, 1], "score": [0.1, 0.9, 0.5, 0.2]})
    curves = pd.DataFrame({"layer": [0, 1, 2, 3], "query": [0.1, 0.8, 0.3, 0.1], "value": [0.0, 0.1, 0.2, 0.9]})
    bars = pd.DataFrame({"group": ["P36", "P36"], "condition": ["top 1%", "random 1%"], "drop": [0.8, 0.05], "drop_std": [0.0, 0.02]})
    knock = pd.DataFrame({"layer": [2, 3], "before": [10, 12], "after": [2, 3]})
    figs = {
        "heat": plotting.layer_heatmap(heat),
        "curves": plotting.query_value_curves(curves),
        "lags": plotting.lag_histogram([1, 2, 1, 1]),
        "bars": plotting.ablation_bars(bars),
        "knock": plotting.knockout_counts(knock),
    }
    lag_note = [a.text for a in figs["curves"].layout.annotations]
    assert lag_note == ["lag = 2 layers"]  # value peak (3) − query peak (1)
    for name, fig in figs.items():
        paths = plotting.save_figure(fig, tmp_path, name, png=name == "heat")
        assert all(p.stat().st_size > 1000 for p in paths)
    assert (tmp_path / "heat.png").read_bytes()[:8] == PNG_MAGIC


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_ablation_bars_colour_the_random_control_grey_in_any_order():
    bars = pd.DataFrame({"group": ["P36", "P36"], "condition": ["random 1%", "top 1% value"], "drop": [0.0, 0.8]})
    colours = {trace.name: trace.marker.color for trace in plotting.ablation_bars(bars).data}
    assert colours == {"random 1%": plotting.RANDOM_COLOR, "top 1% value": plotting.VALUE_COLOR}


def test_png_export_without_a_system_browser(tmp_path, monkeypatch):
    """`make figures` on a fresh machine: the pinned kaleido 0.2.1 renders with its own Chromium.

    PATH is cut down to a folder holding only bash and dirname (what kaleido's launcher script runs), so no
    system chrome/chromium can be found; the PNG must still be written, non-empty, for every figure kind.
    """
    assert importlib.metadata.version("kaleido") == "0.2.1", "the `figures` extra pins kaleido==0.2.1"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("chromium") is None and shutil.which("google-chrome") is None
    plotting._bundled_chromium_scope.cache_clear()  # start the renderer under the cut-down PATH
    try:
        curves = pd.DataFrame({"layer": [0, 1, 2], "query": [0.2, 0.9, 0.1], "value": [0.0, 0.3, 0.8]})
        for name, fig in {"curves": plotting.query_value_curves(curves), "lags": plotting.lag_histogram([1, 2])}.items():
            png = plotting.write_png(fig, tmp_path / f"{name}.png")
            data = png.read_bytes()
            assert data[:8] == PNG_MAGIC and len(data) > 5000, (name, len(data))
    finally:
        plotting._bundled_chromium_scope.cache_clear()


class StalledScope:
    """A renderer that never answers: `transform` blocks reading a child process that writes nothing."""

    def __init__(self):
        import subprocess
        import sys

        self._proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdout=subprocess.PIPE)

    def transform(self, figure, **kwargs):
        line = self._proc.stdout.readline()  # blocks until the process dies
        raise RuntimeError(f"renderer exited ({line!r})")


def test_a_stalled_png_renderer_times_out_and_leaves_the_html(tmp_path, monkeypatch):
    scope = StalledScope()
    monkeypatch.setattr(plotting, "_bundled_chromium_scope", lambda: scope)
    monkeypatch.setattr(plotting, "PNG_TIMEOUT_S", 0.5)
    fig = plotting.lag_histogram([1, 2])
    start = time.monotonic()
    paths = plotting.save_figure(fig, tmp_path, "lags")
    assert time.monotonic() - start < 30  # the renderer would answer only after 600 s: the bound, not it, ended this
    assert [p.name for p in paths] == ["lags.html"] and not (tmp_path / "lags.png").exists()
    assert scope._proc.wait(timeout=5) is not None  # the stalled renderer was stopped, not left running
    with pytest.raises(RuntimeError, match="renderer exited"):  # a dead renderer answers at once: an error
        plotting.transform_within(scope, fig.to_plotly_json(), 0.5)
