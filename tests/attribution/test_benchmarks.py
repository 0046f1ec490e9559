"""The benchmarks' own logic on tiny models: the GPU benchmark's full code path on a CPU (so a single run on a
lent GPU does not fail for a silly reason) and the attribution stages' consistency checks."""

import pytest
import torch

from benchmarks import bench_gpu
from benchmarks.bench_attribution import measure_attribution


def test_measure_attribution_stages_agree(tiny_model):
    prompts = ["the capital of france is", "the language of spain is", "tokyo is the capital of"]
    res = measure_attribution(tiny_model, prompts, ["paris", "spanish", "japan"], n_reference=16, k=10)
    names = [r.name for r in res.rows]
    for stage in ("(c) forward", "(c) forward+backward", "(a) value_scores", "(a0) direct", "(b) per-neuron", "(d) top_value"):
        assert any(n.startswith(stage) for n in names), stage
    assert res.top_sets_identical
    assert res.max_error < 1e-5 and res.max_error64 < 1e-5
    assert all(v > 0 for v in res.ratios.values())


def test_bench_gpu_tiny_on_cpu(tmp_path):
    out = tmp_path / "bench_gpu.md"
    reports = bench_gpu.run(["--device", "cpu", "--tiny", "--shapes", "qwen3-8b", "--no-edit", "--prompts", "3",
                             "--reference-neurons", "8", "--out", str(out)])
    text = out.read_text()
    assert "ERROR" not in text and "skipped" not in text, text
    assert "## qwen3-8b" in text and "(d) top_value_neurons" in text
    assert "top-100 sets identical (d) vs (a): True" in text
    (report,) = reports
    assert report.rows[0].name.startswith("build random qwen3-8b")


def test_bench_gpu_reports_a_failing_stage_and_goes_on(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench_gpu, "measure_attribution", broken)
    out = tmp_path / "bench_gpu.md"
    bench_gpu.run(["--device", "cpu", "--tiny", "--shapes", "gptj-6b", "qwen3-8b", "--no-edit", "--out", str(out)])
    text = out.read_text()
    assert text.count("attribution: ERROR RuntimeError: boom") == 2  # both shapes were still built and tried
    assert text.count("build random") == 2


def test_bench_gpu_skips_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert bench_gpu.run([]) == []
    assert "skipped (no CUDA device)" in capsys.readouterr().out


def test_bench_gpu_dry_run_runs_every_stage(tmp_path):
    """The one-command GPU check's CPU dry run: attribution, covariance, PMET and ACE edits on tiny shapes."""
    import json

    out = tmp_path / "bench_gpu.md"
    bench_gpu.run(["--dry-run", "--shapes", "qwen3-8b", "--budget-s", "3000", "--out", str(out)])
    text = out.read_text()
    assert "ERROR" not in text and "skipped" not in text, text
    record = json.loads(out.with_suffix(".json").read_text())
    (shape,) = record["shapes"]
    names = [m["name"] for m in shape["stages"]]
    for stage in ("(a) value_scores", "covariance, layer", "PMET edit, cold statistics", "ACE edit"):
        assert any(n.startswith(stage) for n in names), (stage, names)
    assert all(m["seconds"] > 0 for m in shape["stages"])


def test_bench_shapes_smoke(tmp_path):
    import json

    from benchmarks import bench_shapes

    out = tmp_path / "tiny.json"
    (report,) = bench_shapes.main(["--shape", "tiny", "--n-layers", "2", "--repeat", "1", "--neurons", "16",
                                   "--cov-tokens", "200", "--out", str(out)])
    assert json.loads(out.read_text())["stages"].keys() == report["stages"].keys()
    stages = report["stages"]
    assert set(stages) == {"value_sample", "top_k", "covariance", "edit_pmet_cold", "edit_pmet", "edit_ace_cold", "edit_ace"}
    assert stages["value_sample"]["neurons"] == 16 and stages["covariance"]["tokens"] == 200
    assert stages["edit_pmet"]["timings"]["solve"] > 0 and stages["edit_ace"]["written_layers"] == 2
    assert stages["edit_pmet"]["process_peak_mib"] >= report["model"]["rss_mib"] * 0.5
    assert "| tiny (2) |" in bench_shapes.render_table([report])


def test_bench_shapes_runs_only_the_chosen_stages_and_editors(tmp_path):
    from benchmarks import bench_shapes

    (report,) = bench_shapes.main(["--shape", "tiny", "--n-layers", "2", "--stages", "edit", "--edit-methods", "pmet",
                                   "--cov-tokens", "200", "--out", str(tmp_path / "tiny.json")])
    assert set(report["stages"]) == {"edit_pmet_cold", "edit_pmet"}
    table = bench_shapes.render_table([report])
    assert "| tiny (2) edit |" in table and "– |" in table
    del report["stages"]["edit_pmet"]  # a row stopped after the cold edit keeps and shows what it measured
    assert "/ – (cold only;" in bench_shapes.render_table([report])
    with pytest.raises(SystemExit):  # ACE writes two layers
        bench_shapes.parse_args(["--shape", "tiny", "--n-layers", "1", "--stages", "edit"])
