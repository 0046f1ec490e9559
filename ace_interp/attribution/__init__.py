"""Neuron-level attribution: value scores, query scores, layer ranking (see docs/attribution.md)."""

from ace_interp.attribution.value import (
    DEFAULT_MEMORY_BUDGET,
    NORM_MODES,
    ComponentScores,
    ValueScores,
    additivity_check,
    component_scores,
    log_prob_increase,
    target_log_prob,
    target_token_ids,
    top_mean_value_neurons,
    top_neurons_frame,
    top_value_neurons,
    value_scores,
    value_neurons_above,
    value_scores_for,
)
from ace_interp.attribution.query import (
    QUERY_AGGREGATES,
    QUERY_DEFINITIONS,
    QueryScores,
    activation_keys,
    mlp_input_norm,
    mlp_input_scale,
    normalize_mlp_input,
    query_activations,
    query_scores,
)
from ace_interp.attribution.layers import LayerRanking, rank_layers
