"""The paper's mechanistic findings, reproduced on the real default model and on both toy models.

(a) zeroing a relation's top-1% value neurons hurts single-hop recall far more than a random 1%;
(b) on 2-hop questions the bridge entity surfaces in the value neurons before the answer (the paper: a lead of
    1-2 layers). Measured as a lag that can come out either way (analysis.bridge_lag): the peak layer of the
    answer token's value curve minus that of the bridge entity's token, same prompt, same last position. The
    query-score view ("the top query layer precedes the top value layer") holds by construction and is not
    tested as a finding;
(c) knocking out the top query neurons reduces the downstream activated value neurons.
"""

import pytest

from ace_interp.ablation import query_knockout_experiment, value_ablation_experiment
from ace_interp.analysis.bridge_lag import bridge_lag
from ace_interp.analysis.figures import multi_hop_prompts, single_hop_prompts
from ace_interp.attribution.layers import rank_layers
from ace_interp.evaluation.protocol import default_cases, multi_hop_asker
from ace_interp.data.mquake import load_mquake
from ace_interp.model import load_model

# Measured 2026-11-26 on the toy models retrained with sport relations (assets/README.md; 12 single-hop prompts
# of 3 relations, 12 two-hop questions), recorded as strict xfails so the suite says so out loud and turns red
# the day a retrained model does reproduce them:
# - top-1% value ablation (31 of 3,072 neurons on toy-gptj, 23 of 2,304 on toy-qwen3) leaves single-hop accuracy
#   at 1.00 on both (drop 0.00; random 1%: 0.00) -- not reproduced.
# - the top query layer precedes the top value layer on both (gptj: query 2, value 5; qwen3: query 3, value 5)
#   -- holds, but by construction (query scores count only later value neurons); the bridge lag below replaces
#   it. With 6 questions gptj's top value layer was 1 (12 and 24 questions: 5), hence 12.
# - knocking out the top query layer's top-20 query neurons does not lower the activated value neurons
#   by the 5% the test asks (gptj layer 2: 19.2 -> 18.9; qwen3 layer 3: 13.1 -> 14.7 per prompt) -- not
#   reproduced. SmolLM2: query layer 24 precedes value layer 29 and the knockout lowers them 72.6 -> 64.7.
# Not only saturation: a qwen3 toy from the 15-minute CPU recipe, ~150x less saturated (mean log p -5.4e-4), also
# flips no answer at 1% and shows no knockout reduction; 5-10% sets do flip answers (README, "Findings").
NOT_REPRODUCED = {
    ("ablation", "toy-gptj"): "top-1% value ablation drops toy-gptj's single-hop accuracy by 0.00 (see comment)",
    ("ablation", "toy-qwen3"): "top-1% value ablation drops toy-qwen3's single-hop accuracy by 0.00 (see comment)",
    ("knockout", "toy-gptj"): "query knockout leaves toy-gptj's active value neurons at 19.2 -> 18.9 (see comment)",
    ("knockout", "toy-qwen3"): "query knockout raises toy-qwen3's active value neurons 13.1 -> 14.7 (see comment)",
}
N_TWO_HOP = 12
MODELS = ["smollm2-135m", "toy-gptj", "toy-qwen3"]


def _expect_reproduced(request, finding: str, name: str) -> None:
    """Mark the running test a strict xfail where `finding` was measured not to reproduce on `name`."""
    reason = NOT_REPRODUCED.get((finding, name))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"measured 2026-11-26: {reason}"))


@pytest.fixture(scope="module", params=MODELS)
def setup(request):
    name = request.param
    path = default_cases(name)
    if not path.exists():
        pytest.skip(f"{path} is missing")
    try:
        bridge = load_model(name, device="cpu")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    cases = load_mquake(path)
    return name, bridge, cases


@pytest.mark.real_model
def test_top_value_neurons_matter_far_more_than_random(setup, request):
    name, bridge, cases = setup
    _expect_reproduced(request, "ablation", name)
    single = single_hop_prompts(cases, per_relation=4, n_relations=3)
    frame = value_ablation_experiment(bridge, single.prompt.tolist(), single.target.tolist(), single.relation.tolist(),
                                      fraction=0.01, seeds=(0, 1, 2))
    top = frame[frame.condition == "top"].accuracy_drop.mean()
    random = frame[frame.condition == "random"].accuracy_drop.mean()
    baseline = frame[frame.condition == "baseline"].accuracy.mean()
    print(f"{name}: baseline accuracy {baseline:.2f}, drop top-1% {top:.2f}, drop random-1% {random:.2f}")
    assert baseline >= 0.5
    assert top >= 0.4 and top >= random + 0.3


@pytest.fixture(scope="module")
def two_hop(setup):
    """The model's first N_TWO_HOP two-hop questions and their layer ranking."""
    name, bridge, cases = setup
    questions = [c for c in cases if c.n_hops == 2][:N_TWO_HOP]
    multi = multi_hop_prompts(questions, len(questions), multi_hop_asker(name))
    ranking = rank_layers(bridge, multi.prompt.tolist(), multi.target.tolist(), top_k_layers=bridge.cfg.n_layers)
    print(f"{name}: query layers {ranking.query_layers[:3]}, value layers {ranking.value_layers[:3]}")
    return multi, ranking


# Bridge lag (b), measured 2026-12-06 with `ace bridge-lag` (docs/findings/2026-12-06-bridge-lag.md): mean peak lag
# (answer peak - bridge peak, layers) with its bootstrap 95% interval
#   toy-gptj   +0.14 [-0.15, +0.42] (n=200; 66 positive, 82 zero, 52 negative; sign test p=0.23)
#   toy-qwen3  -0.48 [-0.68, -0.30] (n=200; 20 positive, 112 zero, 68 negative; p=2.8e-7): the answer peaks first
#   SmolLM2   -0.30 [-0.54, -0.07] (n=97 of its first 100 2-hop cases; 1 positive, 81 zero, 15 negative; p=5.2e-4);
#             its first 24 cases (the test's): +0.25 [0.00, +0.75] (1 positive, 23 zero)
# None shows the paper's lead of the bridge by 1-2 layers: the interval's upper end stays below +1 layer.
N_BRIDGE_CASES = {"toy-gptj": 200, "toy-qwen3": 200, "smollm2-135m": 24}


@pytest.mark.real_model
def test_bridge_does_not_lead_the_answer_by_a_layer(setup):
    name, bridge, cases = setup
    lag = bridge_lag(bridge, cases, multi_hop_asker(name), N_BRIDGE_CASES[name])
    s = lag.summary("peak_lag")
    print(f"{name}: peak lag {s['mean']:+.2f} [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}] n={s['n']}, "
          f"{s['n_positive']}/{s['n_zero']}/{s['n_negative']} (+/0/-), sign test p={s['sign_test_p']:.2g}")
    assert s["n"] >= 0.9 * N_BRIDGE_CASES[name]
    assert s["ci_high"] < 1.0  # the bridge does not lead by a layer or more
    if name == "toy-qwen3":
        assert s["ci_high"] < 0.0  # its answer peaks before the bridge


@pytest.mark.real_model
def test_query_knockout_silences_downstream_value_neurons(setup, two_hop, request):
    name, bridge, _ = setup
    _expect_reproduced(request, "knockout", name)
    multi, ranking = two_hop
    q_top = ranking.query_layers[0]
    knock = query_knockout_experiment(bridge, multi.prompt.tolist(), multi.target.tolist(), q_top, n_neurons=20)
    print(f"{name}: knockout of layer {q_top}: {knock.summary}")
    # a clear reduction (>= 5%), not noise: smollm2 measured 72.6 -> 64.7 per prompt
    assert knock.summary["mean_active_after"] <= 0.95 * knock.summary["mean_active_before"]
