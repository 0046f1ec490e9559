"""Edit requests shared by the editing tests."""

from ace_interp.editing import EditRequest

# Prompts end with the subject: in a tiny *random* model almost nothing flows between positions through
# attention, so a fact can only be edited where the subject's own position makes the prediction.
FRANCE = EditRequest("the capital of {}", "france", "tokyo", "paris")
SPAIN = EditRequest("the language of {}", "spain", "japanese", "spanish")


def prediction(bridge, request) -> int:
    """The model's greedy next token after the request's prompt."""
    import torch

    with torch.no_grad():
        return int(bridge(bridge.to_tokens(request.text))[0, -1].argmax())


def target_id(bridge, request) -> int:
    """The first token of the request's target_new (as it follows the prompt)."""
    return bridge.tokenizer(" " + request.target_new, add_special_tokens=False)["input_ids"][0]
