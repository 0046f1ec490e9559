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
