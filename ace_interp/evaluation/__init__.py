"""Evaluation: answer checking (generation, normalisation, alias matching, target ranks) and the
MQuAKE protocol."""

from ace_interp.evaluation.answers import (
    answer_matches,
    answer_text,
    check_answers,
    cot_final_answer,
    generate_greedy,
    normalize_answer,
    plain_hf_model,
    target_scores,
    target_token_ids,
)

__all__ = [
    "answer_matches",
    "answer_text",
    "check_answers",
    "cot_final_answer",
    "generate_greedy",
    "normalize_answer",
    "plain_hf_model",
    "target_scores",
    "target_token_ids",
]
