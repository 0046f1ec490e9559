"""Model access: loading into TransformerLens 4, neuron-level views, transactional weight writes."""

from ace_interp.model.architecture import (
    FFN_COMPONENTS,
    ModelSpec,
    UnsupportedModelError,
    check_layer,
    check_supported,
    ffn_output_norm_module,
    ffn_weight,
    hf_model,
    hf_parameters,
    model_spec,
)
from ace_interp.model.loading import (
    DEFAULT_MODEL,
    SaveError,
    available_models,
    cache_dir,
    load_model,
    save_model,
)
from ace_interp.model.neurons import (
    NeuronActivations,
    apply_final_norm,
    ffn_output_from_neurons,
    final_norm_scale,
    gate_keys,
    mlp_coefficients,
    neuron_activations,
    residual_log_probs,
    resolve_positions,
    norm_divisor,
    norm_gamma,
    residual_sub_values,
    residual_sub_values_of,
    sub_keys,
    sub_values,
    tokenize_prompts,
    unembed,
)
from ace_interp.model.state import ModelState, model_state
from ace_interp.model.weights import WeightEdit, WeightWriteError, apply_weight_updates, edit_stack, undo_all
