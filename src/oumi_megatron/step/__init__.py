"""The phases of one GRPO step, in the order they run: rollout (per replica) → reward and
advantages (per replica) → exchange (sequences to the ranks that train on them) → update →
weight sync. `topology` says which rank does what; `components` builds the pieces."""
