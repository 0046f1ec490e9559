"""The synthetic world: determinism, held-out compositions, tokenizer, MQuAKE-schema edit cases."""

import json
from pathlib import Path

import pytest

from ace_interp.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, encode_words, world_tokenizer
from ace_interp.data.world import (
    KINDS,
    Composition,
    WorldConfig,
    eval_split,
    generate_world,
    load_eval_split,
    load_world,
    make_case,
    mquake_cases,
    multi_hop_questions,
    noun_phrase,
    save_world_assets,
    training_examples,
    world_corpus,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SHARED_MQUAKE = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "MQuAKE-hard.json"

CASE_KEYS = {"case_id", "requested_rewrite", "questions", "answer", "answer_alias", "new_answer",
             "new_answer_alias", "single_hops", "new_single_hops", "orig"}
REWRITE_KEYS = {"prompt", "relation_id", "target_new", "target_true", "subject", "question"}
HOP_KEYS = {"question", "cloze", "answer", "answer_alias"}
ORIG_KEYS = {"triples", "triples_labeled", "new_triples", "new_triples_labeled", "edit_triples", "edit_triples_idx"}


@pytest.fixture(scope="module")
def small_world():
    return generate_world(WorldConfig(n_persons=60, seed=1))


def test_generator_is_deterministic():
    a = generate_world(WorldConfig(n_persons=80, seed=3)).to_dict()
    b = generate_world(WorldConfig(n_persons=80, seed=3)).to_dict()
    c = generate_world(WorldConfig(n_persons=80, seed=4)).to_dict()
    assert a == b
    assert a["facts"] != c["facts"] and a["heldout"] != c["heldout"]
    w = generate_world(WorldConfig(n_persons=80, seed=3))
    assert world_corpus(w) == world_corpus(generate_world(WorldConfig(n_persons=80, seed=3)))
    assert mquake_cases(w, 20, 10) == mquake_cases(generate_world(WorldConfig(n_persons=80, seed=3)), 20, 10)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="n_persons"):
        WorldConfig(n_persons=0)
    with pytest.raises(ValueError, match="heldout_fraction"):
        WorldConfig(heldout_fraction=1.5)


def test_entities_objects_single_token_persons_multi_token(small_world):
    types = {e.type for e in small_world.entities.values()}
    assert types == {"person", "country", "city", "continent", "language", "currency", "sport", "equipment"}
    for e in small_world.entities.values():
        assert (len(e.name.split()) >= 2) == (e.type == "person"), e
    qids = [e.qid for e in small_world.entities.values()]
    assert len(set(qids)) == len(qids)
    # every fact is typed as its relation says
    for (s, rid), o in small_world.facts.items():
        r = small_world.relations[rid]
        assert r.takes(small_world.entities[s].type) and small_world.entities[o].type == r.object_type


def test_relation_ids_and_templates(small_world):
    assert {"P27", "P641", "P19", "P36", "P30", "P37", "P38", "P17", "P495"} <= set(small_world.relations)
    for r in small_world.relations.values():
        assert len(r.cloze) >= 2 and len(r.questions) >= 2 and len(r.noun_phrases) >= 2
        for t in (*r.cloze, *r.questions, *r.noun_phrases):
            assert t.count("{}") == 1
        for q in r.questions:
            assert q.startswith("Q: ") and q.endswith(" ? A:")


def test_heldout_compositions_never_in_training_corpus(small_world):
    corpus = world_corpus(small_world)
    text = "\n".join(corpus)
    padded = " " + " \n ".join(corpus) + " "  # whole-word matches: "rio ..." must not match "rosario ..."
    held = sorted(small_world.heldout)
    shown = [c for c in small_world.compositions if c not in small_world.heldout]
    assert held and shown
    for c in held:
        for v in [(0,) * c.hops, (1,) * c.hops, (0, 1) + (0,) * (c.hops - 2)]:
            np = noun_phrase(small_world, c.subject, c.path, v)
            assert f" {np} " not in padded, (c, np)
    # ... while shown compositions are there, in direct and chain-of-thought form (the check can fail)
    c = shown[0]
    np = noun_phrase(small_world, c.subject, c.path, (0,) * c.hops)
    assert any(s.startswith(np + " is ") for s in corpus)
    assert any(np in s and "step by step" in s for s in corpus)
    # every single-hop fact is in the corpus
    for (s, rid), o in small_world.facts.items():
        assert f"{small_world.relations[rid].cloze[0].format(s)} {o}" in text


def test_heldout_share_and_three_hop_prefixes(small_world):
    two = [c for c in small_world.compositions if c.hops == 2]
    held_two = [c for c in two if c in small_world.heldout]
    assert abs(len(held_two) / len(two) - 0.2) < 0.01
    for c in small_world.heldout:
        if c.hops == 3:
            continue
        for ext in small_world.compositions:
            if ext.hops == 3 and ext.subject == c.subject and ext.path[:2] == c.path:
                assert ext in small_world.heldout
    assert any(c.hops == 3 for c in small_world.compositions)


def test_training_and_eval_examples(small_world):
    train = training_examples(small_world)
    assert set(train) == set(KINDS)
    assert not any(ex.heldout for exs in train.values() for ex in exs)
    split = eval_split(small_world)
    assert all(ex.heldout for k, exs in split.items() if k != "single_hop" for ex in exs)
    ex = split["two_hop_cot"][0]
    chain = small_world.chain(ex.subject, ex.path)
    assert ex.prompt.endswith("? A: step by step :")
    assert ex.target == (
        f"{small_world.relations[ex.path[0]].cloze[0].format(ex.subject)} {chain[0]} . "
        f"{small_world.relations[ex.path[1]].cloze[0].format(chain[0])} {chain[1]} ."
    )
    assert ex.answer == chain[1]
    d = split["three_hop_direct"][0]
    assert d.target == small_world.chain(d.subject, d.path)[-1]


def test_tokenizer_covers_world_and_specials(small_world):
    tok = world_tokenizer(small_world)
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (UNK_ID, BOS_ID, EOS_ID, PAD_ID)
    assert len({UNK_ID, BOS_ID, EOS_ID, PAD_ID}) == 4
    for s in world_corpus(small_world)[:2000]:
        ids = tok(s, add_special_tokens=True)["input_ids"]
        assert UNK_ID not in ids and BOS_ID not in ids  # the tokenizer adds no BOS itself
        assert ids == encode_words(tok, s)
    for e in small_world.entities.values():
        if e.type != "person":
            assert len(tok(e.name)["input_ids"]) == 1
    assert tok("zzz unknownword")["input_ids"] == [UNK_ID, UNK_ID]
    with pytest.raises(ValueError, match="not in the world's vocabulary"):
        encode_words(tok, "paris zzz")


def _check_schema(case):
    assert CASE_KEYS <= set(case)
    assert isinstance(case["case_id"], int)
    assert len(case["questions"]) == 3 and all(isinstance(q, str) for q in case["questions"])
    for r in case["requested_rewrite"]:
        assert set(r) == REWRITE_KEYS
        assert "{}" in r["prompt"] and set(r["target_new"]) == {"str", "id"} == set(r["target_true"])
    for h in case["single_hops"] + case["new_single_hops"]:
        assert set(h) == HOP_KEYS
    assert set(case["orig"]) == ORIG_KEYS
    hops = len(case["single_hops"])
    assert hops == len(case["new_single_hops"]) == len(case["orig"]["triples"]) == len(case["orig"]["new_triples"])
    assert 1 <= len(case["requested_rewrite"]) == len(case["orig"]["edit_triples"]) <= hops


def test_mquake_cases_follow_the_schema_and_the_edits(small_world):
    cases = mquake_cases(small_world, n_two_hop=40, n_three_hop=30)
    assert {len(c["single_hops"]) for c in cases} == {2, 3}
    assert {len(c["requested_rewrite"]) for c in cases} == {1, 2, 3}
    try:
        from ace_interp.data.mquake import validate_case
    except ImportError:  # the MQuAKE schema module is another part of the package
        validate_case = None
    for case in cases:
        _check_schema(case)
        if validate_case is not None:
            validate_case(case)
        assert case["new_answer"] != case["answer"]
        assert case["heldout_composition"]
        subject = case["single_hops"][0]["cloze"]
        path = tuple(t[1] for t in case["orig"]["triples"])
        s = case["orig"]["triples_labeled"][0][0]
        assert s in subject
        assert small_world.chain(s, path)[-1] == case["answer"]
        # new_answer = the composition of the edited facts in the world
        facts = dict(small_world.facts)
        for r in case["requested_rewrite"]:
            assert facts[(r["subject"], r["relation_id"])] == r["target_true"]["str"]
            assert r["prompt"].format(r["subject"]) in [h["cloze"] for h in case["new_single_hops"]]
            facts[(r["subject"], r["relation_id"])] = r["target_new"]["str"]
        new_chain = small_world.chain(s, path, facts)
        assert new_chain[-1] == case["new_answer"]
        assert [h["answer"] for h in case["new_single_hops"]] == new_chain
        assert [b["new"] for b in case["bridge_entities"]] == new_chain[:-1]
        assert [b["orig"] for b in case["bridge_entities"]] == small_world.chain(s, path)[:-1]
        assert case["questions"] == multi_hop_questions(small_world, s, path)
        assert case["new_cot_target"].split()[-2] == case["new_answer"]
        labeled = case["orig"]["new_triples_labeled"]
        assert [t[2] for t in labeled] == new_chain


def test_mquake_key_sets_match_the_shared_file():
    if not SHARED_MQUAKE.exists():
        pytest.skip(f"{SHARED_MQUAKE} is absent (the shared MQuAKE-hard file is not part of the project)")
    ref = json.loads(SHARED_MQUAKE.read_text())[0]
    assert set(ref) == CASE_KEYS and set(ref["orig"]) == ORIG_KEYS
    assert set(ref["requested_rewrite"][0]) == REWRITE_KEYS and set(ref["single_hops"][0]) == HOP_KEYS


def test_make_case_rejects_bad_edits(small_world):
    comp = next(c for c in small_world.compositions if c.path == ("P27", "P36"))
    true_country = small_world.facts[(comp.subject, "P27")]
    with pytest.raises(ValueError, match="bad edit"):
        make_case(small_world, 0, comp, [0], [true_country])
    with pytest.raises(ValueError, match="bad edit"):
        make_case(small_world, 0, comp, [0], ["paris"])  # a city is not a country
    with pytest.raises(ValueError, match="one new object"):
        make_case(small_world, 0, comp, [], [])


def test_world_assets_roundtrip(tmp_path, small_world):
    save_world_assets(small_world, tmp_path, n_two_hop_cases=10, n_three_hop_cases=5, corpus_sample_lines=100)
    w = load_world(tmp_path)
    assert w.to_dict() == small_world.to_dict()
    split = load_eval_split(tmp_path)
    ref = eval_split(small_world)
    assert {k: [(e.prompt, e.target) for e in v] for k, v in split.items()} == {
        k: [(e.prompt, e.target) for e in v] for k, v in ref.items()
    }
    assert len(json.loads((tmp_path / "mquake_cases.json").read_text())) == 15
    assert len((tmp_path / "corpus_sample.txt").read_text().splitlines()) == 100
    with pytest.raises(FileNotFoundError):
        load_world(tmp_path / "nope.json")


def test_shipped_world_assets_are_consistent():
    folder = ASSETS / "world"
    if not (folder / "world.json").exists():
        pytest.fail(f"{folder} is missing: regenerate with `python -m ace_interp.data.train_toy --write-world`")
    w = load_world(folder)
    # the shipped spec is what the seeded generator makes from its config
    assert w.to_dict() == generate_world(w.config).to_dict()
    cases = json.loads((folder / "mquake_cases.json").read_text())
    assert len(cases) >= 100
    for case in cases:
        _check_schema(case)
    for f in folder.iterdir():
        assert f.stat().st_size < 8_000_000, f
    assert Composition(*[cases[0]["orig"]["triples_labeled"][0][0], tuple(t[1] for t in cases[0]["orig"]["triples"])]) in w.heldout


def test_sport_relations_give_a_sport_its_origins_country_facts():
    with_knob = generate_world(WorldConfig(n_persons=40, sport_relations=True))
    without = generate_world(WorldConfig(n_persons=40, sport_relations=False))
    for sport in with_knob.of_type("sport"):
        origin = with_knob.facts[(sport, "P495")]
        for rid in ("P30", "P37", "P38"):
            assert with_knob.facts[(sport, rid)] == with_knob.facts[(origin, rid)]
            assert (sport, rid) not in without.facts
    two_hop_with = {c.path for c in with_knob.compositions if c.hops == 2}
    two_hop_without = {c.path for c in without.compositions if c.hops == 2}
    assert two_hop_with - two_hop_without == {("P641", "P30"), ("P641", "P37"), ("P641", "P38")}
    # a person's sport now has five continuations, like a birthplace's four plus the country
    assert len({p for p in two_hop_with if p[0] == "P641"}) == 5
