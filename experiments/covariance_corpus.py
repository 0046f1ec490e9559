"""How much the covariance corpus changes an edit's specificity (issue #5: SmolLM2's statistics come from
text available offline).

    python -m experiments.covariance_corpus --model smollm2-135m --methods memit pmet --n 8 \
        --files /usr/share/vim/vim90/doc/usr_*.txt

Corpora compared: the default (for SmolLM2, text sampled from the model itself, `model_sampled_corpus`)
and the local text files given by `--files` (any plain text a user has; `TextCorpus.from_files`), with the
same number of key tokens. For each corpus and method, the first n distinct-subject rewrites of the
model's case file are edited one at a time (then undone); efficacy = greedy top-1 of the new answer on the
cloze prompt; specificity = of up to 5 unrelated facts per edit of the edited relation that the unedited
model answers, the fraction still answered (as in `experiments.sweep_toy_editing`).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import pandas as pd

from ace_interp.editing import EditRequest, TextCorpus, default_hparams, edit
from ace_interp.evaluation.protocol import edit_efficacy
from experiments.sweep_toy_editing import rewrites_with_specificity, still_answered
from experiments import RESULTS, save_run


def run(model: str, methods, n: int, files) -> pd.DataFrame:
    bridge, style, rws, facts = rewrites_with_specificity(model, n)
    corpora = {"default": None}
    if files:
        corpora[f"files ({len(files)})"] = TextCorpus.from_files(files)
    rows = []
    for method in methods:
        for label, corpus in corpora.items():
            hp = default_hparams(method, bridge)
            hp = replace(hp, covariance=replace(hp.covariance, corpus=corpus))
            t = time.perf_counter()
            eff, spec = [], []
            for rw, fs in zip(rws, facts):
                with edit(bridge, [EditRequest.from_rewrite(rw.to_dict())], method, hp):
                    eff += edit_efficacy(bridge, [rw], style)[0]
                    spec += still_answered(bridge, style, fs)
            row = {"model": model, "method": method, "corpus": label, "efficacy": sum(eff) / len(eff),
                   "specificity": sum(spec) / max(1, len(spec)), "n spec": len(spec), "s": time.perf_counter() - t}
            print(row, flush=True)
            rows.append(row)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", nargs="+", default=["memit", "pmet"])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--files", nargs="*", default=[])
    parser.add_argument("--out", default=str(RESULTS / "covariance-corpus"))
    args = parser.parse_args()
    started = time.time()
    frame = run(args.model, args.methods, args.n, args.files)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(frame.to_markdown(index=False, floatfmt=".2f"))
    save_run(args.out, {"summary": frame}, started, load_average=list(load))
