"""Where an edit's write reaches in a multi-hop question.

A closed-form edit changes layer L's FFN output by ΔF(k) = ΔW_out·m(k) for whatever key the FFN sees. At the
edited key k* (the subject's last token of the rewrite prompt) that is the full written delta. In a multi-hop
question the write only matters where the question's keys overlap k*, so per position p of the question

    reach(p) = ‖ΔF^L(p)‖ / ‖ΔF^L(k*)‖        (L = the last edited layer)

is 1 where the question holds the edited key (a rewrite of the question's own subject: same causal prefix) and
≈ 0 where it never does. A rewrite of a later hop edits a *bridge entity* the question never names ("marrakesh
's nation" for "s 's birthplace 's nation"): the model reaches marrakesh only as an implicit representation,
whose keys need not resemble the token's. `write_reach` measures this on real edits; `reach_summary` folds it
per rewrite. (Measured on the toy models: docs/ace.md, "Why multi-hop does not follow".)
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.utilities import get_act_name

from ace_interp.data.mquake import MQuAKECase
from ace_interp.editing import HopPrompt, edit
from ace_interp.editing.keys import encode, subject_prompt_ids
from ace_interp.evaluation.protocol import case_requests


def mlp_out(bridge: TransformerBridge, layer: int, text: str) -> tuple[list[int], torch.Tensor]:
    """(token ids, layer's FFN output at every position [pos, d_model]) of `text`."""
    ids = encode(bridge, text)
    hook = get_act_name("mlp_out", layer)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(torch.tensor([ids], device=bridge.cfg.device), names_filter=lambda n: n == hook)
    return ids, cache[hook][0].float()


def write_reach(
    bridge: TransformerBridge,
    case: MQuAKECase,
    method: str = "pmet",
    hparams: object | None = None,
    hop_prompts: Sequence[HopPrompt] = (),
) -> pd.DataFrame:
    """Apply the case's rewrites with `method`, measure reach(p) at every token of every question (and of
    each rewrite prompt, as a check: 1 at its own subject token), then undo the edit.

    Columns: case_id, request (index of the rewrite whose edited key is the reference), edited_hop, text,
    is_question, position, token, reach. The model is unchanged afterwards, also on error.
    """
    requests = case_requests(case)
    texts = [(q, True) for q in case.questions] + [(r.text, False) for r in requests]
    applied = edit(bridge, requests, method=method, hparams=hparams, hop_prompts=hop_prompts)
    layer = applied.layers[-1]
    try:
        after = {t: mlp_out(bridge, layer, t) for t, _ in texts}
    finally:
        applied.undo()
    before = {t: mlp_out(bridge, layer, t) for t, _ in texts}
    rows = []
    for i, (request, hop) in enumerate(zip(requests, case.edited_hops, strict=True)):
        _, at = subject_prompt_ids(bridge, "", request)
        reference = (after[request.text][1][at] - before[request.text][1][at]).norm()
        for text, is_question in texts:
            ids, out_before = before[text]
            change = (after[text][1] - out_before).norm(dim=-1) / reference
            rows += [{"case_id": case.case_id, "request": i, "edited_hop": hop, "text": text, "is_question": is_question,
                      "position": p, "token": bridge.tokenizer.decode([tok]), "reach": float(change[p])}
                     for p, tok in enumerate(ids)]
    return pd.DataFrame(rows)


def reach_summary(reach: pd.DataFrame) -> pd.DataFrame:
    """Per (case, request): the edited hop and the largest reach over the tokens of any question."""
    questions = reach[reach.is_question]
    return (questions.groupby(["case_id", "request", "edited_hop"], dropna=False).reach.max()
            .rename("max_reach").reset_index())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ace_interp.analysis.edit_reach toy-gptj --per-edits 20`: the reach of `--method` edits on the
    model's one-edit cases (the main table's sample for `--seed`), summarised by the hop each rewrite edits."""
    import argparse
    import logging

    from ace_interp.data.mquake import load_mquake
    from ace_interp.evaluation.main_table import sample_by_edits
    from ace_interp.evaluation.protocol import default_cases
    from ace_interp.model import load_model

    p = argparse.ArgumentParser(prog="python -m ace_interp.analysis.edit_reach", description=main.__doc__)
    p.add_argument("model")
    p.add_argument("--method", default="pmet")
    p.add_argument("--per-edits", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    bridge = load_model(args.model)
    cases = [c for c in sample_by_edits(load_mquake(default_cases(args.model)), args.per_edits, args.seed)
             if c.n_edits == 1]
    summary = pd.concat([reach_summary(write_reach(bridge, c, args.method)) for c in cases], ignore_index=True)
    by_hop = summary.groupby("edited_hop").max_reach.agg(["count", "mean", "min", "max"])
    print(f"{args.model}, {args.method}, {len(cases)} one-edit cases: largest reach into the question, by edited hop")
    print(by_hop.round(2).to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
