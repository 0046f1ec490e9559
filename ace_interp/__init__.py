"""ace-interp: find where a transformer stores and routes facts, neuron by neuron, and edit them (ACE).

    import ace_interp as ai

    model = ai.load_model("smollm2-135m")                                  # a TransformerLens 4 TransformerBridge
    top = ai.top_value_neurons(model, "The capital of France is", " Paris", k=20)
    applied = ai.edit(model, [ai.EditRequest("The capital of {} is", "France", "Rome", "Paris")], method="ace")
    applied.undo()

The names below are the public API; each is the library function itself (its docstring opens with an example).
They are imported on first use, so `import ace_interp` (and `ace --help`) stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import TYPE_CHECKING

logging.getLogger(__name__).addHandler(logging.NullHandler())
__version__ = "0.1.0"

# public name -> (module, attribute)
_API: dict[str, tuple[str, str]] = {
    # models
    "load_model": ("ace_interp.model.loading", "load_model"),
    "save_model": ("ace_interp.model.loading", "save_model"),
    "available_models": ("ace_interp.model.loading", "available_models"),
    "model_spec": ("ace_interp.model.architecture", "model_spec"),
    "model_state": ("ace_interp.model.state", "model_state"),
    "neuron_activations": ("ace_interp.model.neurons", "neuron_activations"),
    "apply_weight_updates": ("ace_interp.model.weights", "apply_weight_updates"),
    "undo_all": ("ace_interp.model.weights", "undo_all"),
    # where facts are stored
    "top_value_neurons": ("ace_interp.attribution.value", "top_value_neurons"),
    "value_scores": ("ace_interp.attribution.value", "value_scores"),
    "query_scores": ("ace_interp.attribution.query", "query_scores"),
    "rank_layers": ("ace_interp.attribution.layers", "rank_layers"),
    "ablate": ("ace_interp.ablation", "ablate_neurons"),
    # editing and its evaluation
    "EditRequest": ("ace_interp.editing.requests", "EditRequest"),
    "edit": ("ace_interp.editing", "edit"),
    "load_mquake": ("ace_interp.data.mquake", "load_mquake"),
    "evaluate": ("ace_interp.evaluation.protocol", "evaluate"),
}
__all__ = sorted(_API)

if TYPE_CHECKING:  # for type checkers and editors; at run time `__getattr__` imports on first use
    from ace_interp.ablation import ablate_neurons as ablate
    from ace_interp.attribution.layers import rank_layers
    from ace_interp.attribution.query import query_scores
    from ace_interp.attribution.value import top_value_neurons, value_scores
    from ace_interp.data.mquake import load_mquake
    from ace_interp.editing import edit
    from ace_interp.editing.requests import EditRequest
    from ace_interp.evaluation.protocol import evaluate
    from ace_interp.model.architecture import model_spec
    from ace_interp.model.loading import available_models, load_model, save_model
    from ace_interp.model.neurons import neuron_activations
    from ace_interp.model.state import model_state
    from ace_interp.model.weights import apply_weight_updates, undo_all


def __getattr__(name: str):
    if name not in _API:
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'ace_interp' has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: `ai.model.hf_parameters`
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
