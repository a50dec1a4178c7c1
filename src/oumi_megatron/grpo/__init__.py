"""The phases of one GRPO step: rollout → reward → advantages → update → weight sync."""
