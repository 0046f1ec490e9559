"""ace-interp: find where a transformer stores and routes facts, neuron by neuron, and edit them (ACE)."""

import logging

from ace_interp.model import (
    apply_weight_updates,
    available_models,
    load_model,
    model_spec,
    neuron_activations,
    save_model,
    undo_all,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())
__version__ = "0.1.0"
