"""Training data: GRPO prompt datasets (``prompts``, ``sources``, ``synthetic``, ``loader``)."""
