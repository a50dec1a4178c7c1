"""Megatron models from Hugging Face checkpoints: layer specs, bridge (convert once / export)."""
