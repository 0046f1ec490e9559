"""Data: synthetic knowledge worlds and toy-model training, the MQuAKE schema and prompts, curated real facts."""
