"""Edit requests shared by the editing tests."""

from ace_interp.editing import EditRequest

# Prompts end with the subject: in a tiny *random* model almost nothing flows between positions through
# attention, so a fact can only be edited where the subject's own position makes the prediction.
FRANCE = EditRequest("the capital of {}", "france", "tokyo", "paris")
SPAIN = EditRequest("the language of {}", "spain", "japanese", "spanish")
