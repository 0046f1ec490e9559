"""How many of the top query layer's neurons must be knocked out before the downstream value neurons go quiet:
the finding-(c) knockout of tests/analysis/test_findings.py (the first 12 two-hop questions of the model's
default cases) at 20, 50 and 100 neurons, against random sets of the same size in the same layer (3 seeds).

    python -m experiments.query_knockout_sweep toy-gptj toy-qwen3 [smollm2-135m] [--out results/query-knockout-sweep]

Prints, per size: activated value neurons per prompt (frozen-norm value score > 0.1 in the later layers) before
and after, and the accuracy after; for the random sets the count, mean log p(answer) and accuracy.
"""

import logging
import time

import pandas as pd

import torch

from ace_interp.ablation import query_knockout_experiment
from ace_interp.analysis.figures import multi_hop_prompts
from ace_interp.attribution.layers import rank_layers
from ace_interp.evaluation.protocol import default_cases, multi_hop_asker
from ace_interp.data.mquake import load_mquake
from ace_interp.model import load_model
from experiments import model_sweep_parser, save_run

log = logging.getLogger("query_knockout_sweep")


def main() -> None:
    p = model_sweep_parser(__doc__, "query-knockout-sweep")
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 50, 100])
    args = p.parse_args()
    started, rows = time.time(), []
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.models:
        bridge = load_model(name, device="cpu")
        questions = [c for c in load_mquake(args.cases or default_cases(name)) if c.n_hops == 2][:12]
        multi = multi_hop_prompts(questions, len(questions), multi_hop_asker(name))
        prompts, targets = multi.prompt.tolist(), multi.target.tolist()
        ranking = rank_layers(bridge, prompts, targets, top_k_layers=bridge.cfg.n_layers)
        layer = ranking.query_layers[0]

        log.info("%s: top query layer %d, top value layers %s", name, layer, ranking.value_layers[:3])
        for size in args.sizes:
            knock = query_knockout_experiment(bridge, prompts, targets, layer, n_neurons=size)
            s = knock.summary
            rows.append({"model": name, "layer": layer, "neurons": size, "set": "top", **s})
            log.info("%s, %d neurons: top: %.1f -> %.1f active, accuracy %.2f", name, size, s["mean_active_before"],
                     s["mean_active_after"], s["accuracy_after"])
            for seed in range(3):
                g = torch.Generator().manual_seed(seed)
                random_set = torch.randperm(bridge.cfg.d_mlp, generator=g)[:size].tolist()
                s = query_knockout_experiment(bridge, prompts, targets, layer, neurons=random_set).summary
                rows.append({"model": name, "layer": layer, "neurons": size, "set": f"random seed {seed}", **s})
                log.info("    random (seed %d): %.1f active, log p %.3f, accuracy %.2f", seed, s["mean_active_after"],
                         s["mean_log_prob_after"], s["accuracy_after"])
    save_run(args.out, {"summary": pd.DataFrame(rows)}, started, case_file=args.cases, seeds=[0, 1, 2])


if __name__ == "__main__":
    main()
