"""MQuAKE variants: the official files by name, MQuAKE-Remastered's flattened layout and split, the hub offline."""

import json
from pathlib import Path

import pytest

from ace_interp.data.mquake import MQuAKEFormatError, load_mquake
from ace_interp.data.mquake_sources import detect_variant, load_mquake_source, unflatten_remastered

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CF3K = FIXTURES / "mquake_cf3k_small.json"
REMASTERED = FIXTURES / "mquake_remastered_small.json"
NESTED = FIXTURES / "mquake_contamination.json"  # the same three cases in the official nested layout


@pytest.mark.parametrize("name, variant", [("MQuAKE-CF-3k-v2.json", "cf-3k-v2"), ("MQuAKE-CF-3k.json", "cf-3k"),
                                           ("MQuAKE-CF.json", "cf"), ("MQuAKE-T.json", "t"), ("MQuAKE-hard.json", "hard"),
                                           ("smollm2_known.json", "mquake")])
def test_official_files_are_told_apart_by_name(tmp_path, name, variant):
    path = tmp_path / name
    path.write_text(CF3K.read_text())
    source = load_mquake_source(path)
    assert source.variant == variant
    assert [c.to_dict() for c in source.cases] == [c.to_dict() for c in load_mquake(CF3K)]


def test_remastered_layout_loads_as_the_nested_cases_with_its_split():
    source = load_mquake_source(REMASTERED)
    assert source.variant == "remastered"
    nested = {c.case_id: c for c in load_mquake(NESTED)}
    for case in source.cases:
        reference = nested[case.case_id]
        assert case.orig.triples == reference.orig.triples and case.orig.new_triples == reference.orig.new_triples
        # edit_triples are not in the flattened rows: read off the edited chain's hop with the rewrite's subject/relation
        assert case.orig.edit_triples == reference.orig.edit_triples
        assert [r.target_new.text for r in case.requested_rewrite] == [r.target_new.text for r in reference.requested_rewrite]
    assert source.edited_case_ids(1) == [1] and source.edited_case_ids(3) == [1, 2, 3]
    with pytest.raises(MQuAKEFormatError, match="split.100"):
        source.edited_case_ids(100)
    with pytest.raises(ValueError, match="only MQuAKE-Remastered"):
        load_mquake_source(CF3K).edited_case_ids(1)


def test_a_remastered_row_whose_rewrite_is_on_no_hop_names_the_field():
    row = json.loads(REMASTERED.read_text())[0]
    row["requested_rewrite"][0]["subject"] = "Big Ben"
    with pytest.raises(MQuAKEFormatError, match="orig.edit_triples"):
        unflatten_remastered(row)


def test_detect_variant_prefers_the_remastered_keys_over_the_name():
    raw = json.loads(REMASTERED.read_text())
    assert detect_variant("MQuAKE-CF-3k-v2.json", raw) == "remastered"
    assert detect_variant("whatever.json", json.loads(CF3K.read_text())) == "mquake"


def test_hub_names_fail_offline_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("CF-3k-v2", "T"):
        with pytest.raises(FileNotFoundError) as err:
            load_mquake_source(name)
        message = str(err.value)
        assert "\n" not in message and "henryzhongsc/MQuAKE-Remastered" in message and "local" in message.lower()


def test_mquake_hard_is_recognised(mquake_hard_path):
    source = load_mquake_source(mquake_hard_path)
    assert source.variant == "hard" and len(source.cases) == 429
