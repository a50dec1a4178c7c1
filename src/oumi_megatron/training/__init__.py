"""Policy update on Megatron-Core: micro-batches, forward/backward, optimizer, checkpoints."""
