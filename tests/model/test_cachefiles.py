"""Cache files several processes create at once (issue 26): two processes racing on the first use of the
same statistics / sampled text / converted folder both succeed and agree; weight digests follow content."""

import subprocess
import sys
import textwrap

import torch

from ace_interp.model import apply_weight_updates, ffn_weight, load_model
from ace_interp.model.cachefiles import publish_folder, weights_digest
from ace_interp.model.loading import REPO_ROOT


def _run_twice_at_once(code: str, env_cache, tmp_path) -> list[str]:
    """Start two Python processes running `code` at the same moment; return their stdout (both must succeed)."""
    script = tmp_path / "race.py"
    script.write_text(textwrap.dedent(code))
    env = {"ACE_INTERP_CACHE": str(env_cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(REPO_ROOT)}  # this checkout's package, not whichever one the venv points at
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(out.strip())
    return outs


def test_two_processes_share_first_use_of_statistics_and_sampled_text(tiny_model_dir, tmp_path):
    model = tiny_model_dir("gptj")
    outs = _run_twice_at_once(f"""
        import torch
        from ace_interp.editing.covariance import model_sampled_corpus, second_moments
        from ace_interp.model import load_model
        bridge = load_model({str(model)!r}, device="cpu")
        corpus = model_sampled_corpus(bridge, n_tokens=200, seq_len=16, progress=False)
        m = second_moments(bridge, [0, 1], corpus=corpus, n_tokens=150, seq_len=16, progress=False)
        print(len(corpus.texts), corpus.fingerprint, float(m[0].sum()), float(m[1].sum()))
    """, tmp_path / "cache", tmp_path)
    assert outs[0] == outs[1]
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_two_processes_publish_one_folder(tmp_path):
    out = tmp_path / "converted"
    outs = _run_twice_at_once(f"""
        import os, time
        from pathlib import Path
        from ace_interp.model.cachefiles import publish_folder
        def build(tmp):
            time.sleep(1.0)  # both processes are inside the conversion at once without the lock
            (tmp / "config.json").write_text(str(os.getpid()))
        publish_folder(Path({str(out)!r}), build)
        print(Path({str(out)!r}, "config.json").read_text())
    """, tmp_path / "cache", tmp_path)
    assert outs[0] == outs[1]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".converted")) == []


def test_publish_folder_builds_once(tmp_path):
    calls = []
    build = lambda tmp: (calls.append(tmp), (tmp / "config.json").write_text("{}"))  # noqa: E731
    publish_folder(tmp_path / "m", build)
    publish_folder(tmp_path / "m", build)
    assert len(calls) == 1 and (tmp_path / "m" / "config.json").exists()


def test_weights_digest_follows_content_not_live_edits(tiny_model_dir):
    bridge = load_model(tiny_model_dir("qwen3"), device="cpu")
    before = {l: weights_digest(bridge, l) for l in range(bridge.cfg.n_layers)}
    w = ffn_weight(bridge, 1, "W_out")
    # a live (undoable) edit does not change the digest of the model as loaded
    with apply_weight_updates(bridge, {(1, "W_out"): torch.ones_like(w)}):
        assert {l: weights_digest(bridge, l) for l in before} == before
    # an untracked change to block 1 changes the digests of layers >= 1 only
    with torch.no_grad():
        w.mul_(0.5)
    after = {l: weights_digest(bridge, l) for l in before}
    assert after[0] == before[0]
    assert all(after[l] != before[l] for l in range(1, bridge.cfg.n_layers))
