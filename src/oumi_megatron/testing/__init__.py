"""Offline fixtures: tiny random models and a small real tokenizer (no hub access)."""
