"""DAPO's overlong handling (Yu et al. 2025, arXiv:2503.14476, section 3.4), pure python.

* **Soft overlong punishment** (verl's ``overlong_buffer``): a completion of length ``L`` with
  ``L_max`` = max completion length and buffer ``L_buf`` gets the reward term
  ``min(0, -(L - (L_max - L_buf)) / L_buf * factor)``: 0 up to ``L_max - L_buf``, falling
  linearly to ``-factor`` at ``L_max``.
* **Overlong filtering** (TRL's ``mask_truncated_completions``): a completion cut at the length
  limit (finish reason ``length``) is left out of the loss: its tokens leave the mask, the
  sequence still counts in per-sequence normalisers (``aggregation``).
"""

from __future__ import annotations

TRUNCATED = "length"  # the finish reason of a completion cut at max_completion_length


def overlong_penalty(length: int, max_length: int, buffer: int, factor: float) -> float:
    """DAPO's soft overlong punishment of one completion (<= 0)."""
    exceed = length - (max_length - buffer)
    return min(-exceed / buffer * factor, 0.0)


def is_truncated(finish_reason: str) -> bool:
    """Whether the engine stopped the completion at the length limit."""
    return finish_reason == TRUNCATED
