"""Why two chained rewrites do not compose on the toys, even with ACE's implicit-subject write.

    python -m experiments.toy_chained_edits [--models toy-gptj toy-qwen3] [--n 12]

A 2-edit MQuAKE case chains its rewrites: "tara ueda 's country is → china" (hop 0) and "china 's currency is → baht"
(hop 1), asked "tara ueda 's country 's currency is". The main table's `ace +implicit` row answers 3–7% of such
cases, against 42–63% of one-edit cases. Per model, on the first `--n` two-edit cases that edit hops 0 and 1:

  * answers: both rewrites applied at once with `ace +implicit` (as in the main table), the greedy answer to the
    case's cloze question: the new answer (baht), the new bridge's *unedited* next hop (yuan: the second rewrite's
    target_true), the unedited chain's answer, or other; and whether each rewrite's own cloze is edited.
  * reach of the second rewrite's implicit-subject write (its layer's FFN output change, largest over a text's
    positions, `analysis.edit_reach.mlp_out`), relative to its mean over the phrase prompts it was keyed on
    ("y 's country 's currency is" for persons y of china): held-out phrases through the case's first relation
    (persons not among those drawn), the case's cloze on the unedited model (where tara ueda's country is not
    china), and the same cloze with the first rewrite written by ACE (where the model now answers china for
    "tara ueda 's country is").
Prints both tables; writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter

import pandas as pd

from ace_interp.analysis.edit_reach import mlp_out
from ace_interp.data.mquake import MQuAKECase, load_mquake
from ace_interp.data.prompts import case_entities
from ace_interp.data.world import noun_phrase
from ace_interp.editing import ImplicitSubject, default_hparams, edit, implicit_subject_layers
from ace_interp.evaluation.answers import next_token_answers
from ace_interp.evaluation.hops import hop_prompts_for, model_world
from ace_interp.evaluation.protocol import case_requests
from ace_interp.model import load_model
from ace_interp.model.loading import ASSETS
from experiments import RESULTS, save_run

CASES = ASSETS / "world" / "mquake_cases.json"


def largest_change(bridge, layer: int, texts: list[str], write) -> list[float]:
    """max over positions of ‖ΔF^layer‖ for each text when `write()` (a context-managed edit) is applied."""
    before = [mlp_out(bridge, layer, t)[1] for t in texts]
    with write():
        after = [mlp_out(bridge, layer, t)[1] for t in texts]
    return [(a - b).norm(dim=-1).max().item() for a, b in zip(after, before)]


def run_model(model_name: str, n: int) -> tuple[Counter, pd.DataFrame]:
    bridge = load_model(model_name)
    world, hops = model_world(bridge), hop_prompts_for(bridge, CASES)
    layer = implicit_subject_layers(bridge)[-1]
    ace, ace_implicit = default_hparams("ace", bridge), default_hparams("ace", bridge, implicit_layers=(layer,))
    cases = [c for c in load_mquake(CASES) if c.n_edits == 2 and c.edited_hops == [0, 1]][:n]
    answers, reach = Counter(), []
    for case in cases:
        first, second = case_requests(case)
        prompts = hops(case)
        cloze = case.questions[-1]
        with edit(bridge, [first, second], "ace", ace_implicit, hop_prompts=prompts):
            said, first_said, second_said = next_token_answers(bridge, [cloze, *(h.cloze for h in case.new_single_hops)])
        kind = {case.new_answer: "new answer", second.target_true: "new bridge's unedited next hop",
                case.answer: "unedited chain's answer"}.get(said, "other")
        answers[(kind, first_said == first.target_new, second_said == second.target_new)] += 1

        # the second rewrite alone, with its phrases renumbered as request 0
        phrases = [ImplicitSubject(0, p.phrase) for p in prompts if isinstance(p, ImplicitSubject) and p.request == 1]
        template, relation = case.requested_rewrite[1].prompt, case.requested_rewrite[0].relation_id
        entities = set(case_entities(case)) | {p.phrase for p in phrases}
        held = [noun_phrase(world, y, (relation,), (0,)) for (y, r), o in sorted(world.facts.items())
                if o == second.subject and r == relation and y not in entities]
        held = [h for h in held if h not in entities][:8]

        def second_write():
            return edit(bridge, [second], "ace", ace_implicit, hop_prompts=phrases)

        keyed = largest_change(bridge, layer, [template.format(p.phrase) for p in phrases], second_write)
        unedited = largest_change(bridge, layer, [cloze] + [template.format(h) for h in held], second_write)
        with edit(bridge, [first], "ace", ace, hop_prompts=[p for p in prompts if p.request == 0
                                                             and not isinstance(p, ImplicitSubject)]):
            chained = largest_change(bridge, layer, [cloze], second_write)
        ref = sum(keyed) / len(keyed)
        reach.append({"case": case.case_id, "held-out phrases": sum(unedited[1:]) / len(held) / ref if held else None,
                      "cloze, unedited model": unedited[0] / ref, "cloze, first rewrite written": chained[0] / ref,
                      "held-out phrases (n)": len(held)})
    return answers, pd.DataFrame(reach)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["toy-gptj", "toy-qwen3"])
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--out", default=str(RESULTS / "toy-chained-edits"))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started, counts, reaches = time.time(), [], []
    for model_name in args.models:
        answers, reach = run_model(model_name, args.n)
        counts += [{"model": model_name, "outcome": str(key), "count": count} for key, count in answers.items()]
        reaches.append(reach.assign(model=model_name))
        print(f"\n{model_name}: answers to the chained question after both rewrites (answer, first rewrite's cloze "
              "edited, second rewrite's cloze edited): count")
        for key, count in answers.most_common():
            print(f"  {key}: {count}")
        print(f"{model_name}: reach of the second rewrite's implicit-subject write, relative to its phrase prompts")
        print(reach.describe().loc[["count", "mean", "min", "max"]].round(2).to_string())
    save_run(args.out, {"answers": pd.DataFrame(counts), "reach": pd.concat(reaches, ignore_index=True)}, started,
             case_file=CASES)


if __name__ == "__main__":
    main()
