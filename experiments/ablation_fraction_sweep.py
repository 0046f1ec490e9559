"""How large a top value-neuron set must be zeroed before a model forgets: the finding-(a) ablation of
tests/analysis/test_findings.py (4 single-hop prompts of each of the 3 commonest relations of the model's
default cases) at fractions 1-10%, ranked per relation and per prompt, against random sets (3 seeds).

    python -m experiments.ablation_fraction_sweep toy-gptj toy-qwen3 [smollm2-135m] [--out results/ablation-fraction-sweep]
"""

import logging
import time

import pandas as pd

from ace_interp.ablation import value_ablation_experiment
from ace_interp.analysis.figures import single_hop_prompts
from ace_interp.evaluation.protocol import default_cases
from ace_interp.data.mquake import load_mquake
from ace_interp.model import load_model

from experiments import model_sweep_parser, save_run

log = logging.getLogger("ablation_fraction_sweep")


def main() -> None:
    p = model_sweep_parser(__doc__, "ablation-fraction-sweep")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.10])
    args = p.parse_args()
    started, rows = time.time(), []
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.models:
        bridge = load_model(name, device="cpu")
        single = single_hop_prompts(load_mquake(args.cases or default_cases(name)), per_relation=4, n_relations=3)
        for scope in ("relation", "prompt"):
            for fraction in args.fractions:
                frame = value_ablation_experiment(bridge, single.prompt.tolist(), single.target.tolist(),
                                                  single.relation.tolist(), fraction=fraction, seeds=(0, 1, 2),
                                                  scope=scope)
                drop = frame.groupby("condition").accuracy_drop.mean()
                # the answer's log-probability too: a model trained to loss ≈ 0 can lose a lot of it and
                # still answer right, so accuracy alone hides what the ablation does
                log_p = frame.groupby("condition").mean_log_prob.mean()
                rows.append({"model": name, "scope": scope, "fraction": fraction,
                             **{f"accuracy_drop_{c}": drop[c] for c in ("top", "random")},
                             **{f"mean_log_p_{c}": log_p[c] for c in ("baseline", "top", "random")}})
                log.info("%s scope=%s fraction=%.2f: accuracy drop top %.2f, random %.2f; mean log p(answer) "
                         "baseline %.2g, top %.2g, random %.2g", name, scope, fraction, drop["top"], drop["random"],
                         log_p["baseline"], log_p["top"], log_p["random"])
    save_run(args.out, {"summary": pd.DataFrame(rows)}, started, case_file=args.cases, seeds=[0, 1, 2])


if __name__ == "__main__":
    main()
