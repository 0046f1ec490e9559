"""The paper's mechanistic findings, reproduced on the real default model and on both toy models.

(a) zeroing a relation's top-1% value neurons hurts single-hop recall far more than a random 1%;
(b) on 2-hop questions the top query layer precedes the top value layer;
(c) knocking out the top query neurons reduces the downstream activated value neurons.
"""

import pytest

from ace_interp.ablation import query_knockout_experiment, value_ablation_experiment
from ace_interp.analysis.figures import multi_hop_prompts, single_hop_prompts
from ace_interp.attribution.layers import rank_layers
from ace_interp.cli import default_cases, multi_hop_asker
from ace_interp.data.mquake import load_mquake
from ace_interp.model import load_model

# Measured 2026-11-26 on the retrained toy models (assets/README.md; 12 single-hop prompts of 3 relations,
# 6 two-hop questions), recorded as strict xfails so the suite says so out loud and turns red the day a
# retrained model does reproduce them:
# - toy-gptj: zeroing its top 1% value neurons (31 of 3,072) leaves single-hop accuracy at 1.00 (drop 0.00,
#   random 1%: 0.00) -- not reproduced. Its top query layer (1) precedes its top value layer (5) and knocking
#   out layer 1's top-20 query neurons lowers the activated value neurons 20.2 -> 15.8 per prompt -- reproduced.
# - toy-qwen3 (with [BOS] prepended as in training; without it the baseline was 0.92): top-1% ablation drops
#   single-hop accuracy by 0.08 (random 1%: 0.00; the test asks for >= 0.4); its top query layer (0) precedes its
#   top value layer (5), but knocking out layer 0's top query neurons leaves the activated value neurons
#   unchanged (22.0 -> 22.0) -- only partly reproduced.
NOT_REPRODUCED = {
    ("ablation", "toy-gptj"): "top-1% value ablation drops toy-gptj's single-hop accuracy by 0.00 (see comment)",
    ("ablation", "toy-qwen3"): "top-1% value ablation drops toy-qwen3's accuracy by 0.08 < 0.4 (see comment)",
    ("pathway", "toy-qwen3"): "query knockout leaves toy-qwen3's active value neurons at 22.0 (see comment)",
}
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
    single = single_hop_prompts(cases, per_relation=4)
    single = single[single.relation.isin(single.relation.value_counts().index[:3])]  # 3 relations
    frame = value_ablation_experiment(bridge, single.prompt.tolist(), single.target.tolist(), single.relation.tolist(),
                                      fraction=0.01, seeds=(0, 1, 2))
    top = frame[frame.condition == "top"].accuracy_drop.mean()
    random = frame[frame.condition == "random"].accuracy_drop.mean()
    baseline = frame[frame.condition == "baseline"].accuracy.mean()
    print(f"{name}: baseline accuracy {baseline:.2f}, drop top-1% {top:.2f}, drop random-1% {random:.2f}")
    assert baseline >= 0.5
    assert top >= 0.4 and top >= random + 0.3


@pytest.mark.real_model
def test_query_layers_precede_value_layers_and_knockout_silences_values(setup, request):
    name, bridge, cases = setup
    _expect_reproduced(request, "pathway", name)
    two_hop = [c for c in cases if c.n_hops == 2][:6]
    multi = multi_hop_prompts(two_hop, len(two_hop), multi_hop_asker(name))
    ranking = rank_layers(bridge, multi.prompt.tolist(), multi.target.tolist(), top_k_layers=bridge.cfg.n_layers)
    q_top, v_top = ranking.query_layers[0], ranking.value_layers[0]
    print(f"{name}: query layers {ranking.query_layers[:3]}, value layers {ranking.value_layers[:3]}")
    assert q_top < v_top
    knock = query_knockout_experiment(bridge, multi.prompt.tolist(), multi.target.tolist(), q_top, n_neurons=20)
    print(f"{name}: knockout of layer {q_top}: {knock.summary}")
    assert knock.summary["mean_active_after"] < knock.summary["mean_active_before"]
