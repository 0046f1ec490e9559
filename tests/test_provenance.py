"""run.json records how a results folder was made."""
import json

from ace_interp.provenance import file_digest, write_run_json


def test_run_json_has_the_provenance_fields(tmp_path):
    cases = tmp_path / "cases.json"
    cases.write_text("[]")
    path = write_run_json(tmp_path / "out", command=["ace", "evaluate"], hparams={"pmet": {"lr": 0.5}},
                          preset="tuned", case_file=cases, seeds=[0, 1], wall_s=1.234, n_cases=3)
    record = json.loads(path.read_text())
    assert record["command"] == "ace evaluate"
    assert record["hparams"] == {"pmet": {"lr": 0.5}} and record["preset"] == "tuned"
    assert record["case_file_sha256"] == file_digest(cases) and record["seeds"] == [0, 1]
    assert record["wall_s"] == 1.23 and record["n_cases"] == 3
    assert len(record["commit"]) == 40 and isinstance(record["dirty"], bool)
    assert record["date"].startswith("20") and "machine" in record
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_dirty_means_the_code_differs_not_the_results(tmp_path, monkeypatch):
    """A run that removes a committed checkpoint under results/ is still on clean code; an edited module is not."""
    import subprocess

    import ace_interp.provenance as provenance

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "items.jsonl").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    assert provenance.git_state()["dirty"] is False
    (tmp_path / "results" / "items.jsonl").unlink()
    assert provenance.git_state()["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_state()["dirty"] is True


def test_the_commit_is_the_one_the_run_started_on(tmp_path, monkeypatch):
    """A run of hours outlives its checkout: run.json and checkpoint headers name the code the process began with."""
    import ace_interp.evaluation.checkpoint as checkpoint
    import ace_interp.provenance as provenance

    started = {"commit": "a" * 40, "dirty": False}
    record = json.loads(write_run_json(tmp_path / "out", git=started).read_text())
    assert (record["commit"], record["dirty"]) == (started["commit"], False)
    monkeypatch.setattr(checkpoint, "git_state", lambda: dict(started))
    store = checkpoint.Checkpoint(tmp_path / "items", {"seed": 0})
    monkeypatch.setattr(checkpoint, "git_state", lambda: {"commit": "b" * 40, "dirty": True})  # the checkout moved on
    store.add(("ft", 1), [{"case_id": 1}], seconds=1.0)
    store.close()
    header = json.loads(next((tmp_path / "items").glob("*.jsonl")).read_text().splitlines()[0])
    assert header["commit"] == "a" * 40 and header["dirty"] is False
    assert provenance.run_record()["commit"] != "a" * 40  # without `git`, read now


def test_a_case_file_in_the_repository_is_recorded_relative_to_it(tmp_path):
    """The same file gets the same name from any checkout or worktree; a file elsewhere keeps its path."""
    from ace_interp.provenance import REPO_ROOT

    inside = REPO_ROOT / "assets" / "world" / "mquake_cases.json"
    record = json.loads(write_run_json(tmp_path / "a", case_file=inside).read_text())
    assert record["case_file"] == "assets/world/mquake_cases.json"
    assert record["case_file_sha256"] == file_digest(inside)
    outside = tmp_path / "cases.json"
    outside.write_text("[]")
    assert json.loads(write_run_json(tmp_path / "b", case_file=outside).read_text())["case_file"] == str(outside)
