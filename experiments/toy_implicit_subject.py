"""Does a later-hop edit follow when ACE also writes where the model holds the bridge implicitly? Toy models.

    python -m experiments.toy_implicit_subject [--models toy-gptj toy-qwen3] [--n-later 40] [--n-hop0 20]

A rewrite of a bridge entity ("marrakesh 's nation is → poland" for "dmitri costa 's birthplace 's nation is")
is written where the bridge is a token; the question holds it only implicitly, and no editor follows (README,
main table: 0% on later-hop rewrites). ACE's implicit-subject write (`ACEHParams.implicit_layers`,
docs/ace.md "The implicit subject") adds a write keyed on noun phrases that reach the edited entity through other
entities ("y 's birthplace" for persons y born in marrakesh; `evaluation.hops.world_implicit_subjects`, never the
question's own subject).

Per model and setting, on the one-edit 2-hop cases of assets/world/mquake_cases.json (the first `--n-later`
whose rewrite edits hop 1, the first `--n-hop0` that edit hop 0), each edit applied alone and undone:
  * multi-hop: any of the case's questions answers the new answer (greedy top-1, as the main table);
  * efficacy: the rewrite's cloze answers target_new;
  * neighbourhood: the case's cloze question asked of 8 other subjects whose first hop reaches a *different*
    bridge ("y' 's birthplace 's nation is" with y' not born in marrakesh) keeps the unedited model's answer.
    The main table's specificity asks single-hop facts; an implicit-subject write can only hurt these.
Writes results/toy-implicit-subject/per_case.csv and prints one table.
"""

from __future__ import annotations

import argparse
import logging
import random
import time

import pandas as pd
from tqdm import tqdm

from ace_interp.data.mquake import MQuAKECase, load_mquake
from ace_interp.data.world import World, load_world
from ace_interp.editing import default_hparams, edit
from ace_interp.evaluation.answers import check_answers, next_token_answers
from ace_interp.evaluation.hops import hop_prompts_for
from ace_interp.evaluation.protocol import case_requests
from ace_interp.model import load_model
from ace_interp.model.loading import ASSETS
from experiments import save_run

CASES = ASSETS / "world" / "mquake_cases.json"
# (label, method, ACE overrides): the implicit-subject write at each layer above the toys' value layer (1) and
# at two layer pairs, and at layer 3 two weaker writes that trade multi-hop for neighbourhood
SETTINGS: tuple[tuple[str, str, dict], ...] = (
    ("pmet", "pmet", {}),
    ("ace", "ace", {}),
    *[(f"ace + implicit, layer{'s' * (len(ls) > 1)} {'–'.join(map(str, ls))}", "ace", {"implicit_layers": ls})
      for ls in ((1,), (2,), (3,), (4,), (2, 3), (3, 4))],
    ("ace + implicit, layer 3, weight 0.75", "ace", {"implicit_layers": (3,), "implicit_weight": 0.75}),
    ("ace + implicit, layer 3, weight 0.5", "ace", {"implicit_layers": (3,), "implicit_weight": 0.5}),
)


def neighbour_questions(world: World, case: MQuAKECase, n: int = 8, seed: int = 1) -> list[str]:
    """The case's cloze question asked of n other subjects whose first hop reaches another entity."""
    subject, first, bridge = case.orig.triples_labeled[0][0], case.orig.triples[0][1], case.orig.triples_labeled[0][2]
    others = sorted(y for (y, r), o in world.facts.items() if r == first and o != bridge and y != subject)
    random.Random(seed).shuffle(others)
    cloze = case.questions[-1]
    return [cloze.replace(subject, y, 1) for y in others[:n]]


def run_model(model_name: str, cases: list[MQuAKECase], world: World) -> pd.DataFrame:
    bridge = load_model(model_name)
    hops = hop_prompts_for(bridge, CASES)
    rows = []
    for label, method, overrides in SETTINGS:
        hp = default_hparams(method, bridge, **overrides)
        for case in tqdm(cases, desc=f"{model_name}: {label}"):
            request = case_requests(case)[0]
            neighbours = neighbour_questions(world, case)
            before = next_token_answers(bridge, neighbours)
            kwargs = {"hop_prompts": hops(case)} if method == "ace" else {}
            with edit(bridge, [request], method, hp, **kwargs) as applied:
                follows = any(check_answers(bridge, list(case.questions), [case.new_answers] * len(case.questions), 1)[0])
                efficacy = check_answers(bridge, [request.text], [[request.target_new]], 1)[0][0]
                after = next_token_answers(bridge, neighbours)
            rows.append({"model": model_name, "setting": label, "case_id": case.case_id,
                         "edited_hop": case.edited_hops[0], "multi_hop": float(follows), "efficacy": float(efficacy),
                         "neighbourhood": sum(a == b for a, b in zip(after, before)) / max(1, len(neighbours)),
                         "seconds": applied.seconds})
    return pd.DataFrame(rows)


def summary(per_case: pd.DataFrame) -> pd.DataFrame:
    later, hop0 = per_case[per_case.edited_hop == 1], per_case[per_case.edited_hop == 0]
    keys = ["model", "setting"]
    out = later.groupby(keys, sort=False).agg(mh_later=("multi_hop", "mean"), n_later=("multi_hop", "size"),
                                              efficacy=("efficacy", "mean"), neighbourhood=("neighbourhood", "mean"),
                                              s_per_edit=("seconds", "mean"))
    hop0 = hop0.groupby(keys, sort=False).agg(mh_hop0=("multi_hop", "mean"), n_hop0=("multi_hop", "size"))
    return out.join(hop0).reset_index()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["toy-gptj", "toy-qwen3"])
    p.add_argument("--n-later", type=int, default=40)
    p.add_argument("--n-hop0", type=int, default=20)
    p.add_argument("--out", default="results/toy-implicit-subject")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.time()
    world = load_world(ASSETS / "world" / "world.json")
    one_edit = [c for c in load_mquake(CASES) if c.n_edits == 1 and c.n_hops == 2]
    cases = ([c for c in one_edit if c.edited_hops == [1]][: args.n_later]
             + [c for c in one_edit if c.edited_hops == [0]][: args.n_hop0])
    per_case = pd.concat([run_model(m, cases, world) for m in args.models], ignore_index=True)
    table = summary(per_case)
    out = save_run(args.out, {"per_case": per_case}, started, case_file=CASES)
    (out / "summary.md").write_text(table.to_markdown(index=False, floatfmt=".2f") + "\n")
    print(table.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
