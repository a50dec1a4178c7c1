"""The moving average the reward curve and the notebooks use."""

from __future__ import annotations

import pytest

from oumi_megatron.plotting import moving_average


def test_moving_average_is_shorter_at_the_start() -> None:
    assert moving_average([1.0, 3.0, 5.0, 7.0], window=2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0, 9.0], window=10) == pytest.approx([2.0, 3.0, 5.0])
    assert moving_average([], window=3) == []
