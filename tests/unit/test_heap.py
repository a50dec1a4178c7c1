"""`heap.py`: survivors frozen, garbage collected first, new cycles still collected."""

import gc
import weakref

import pytest

from oumi_megatron.heap import freeze_long_lived


class _Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _unfreeze():
    yield
    gc.unfreeze()


def test_survivors_frozen_after_garbage_collected():
    kept, dropped = _Node(), _Node()
    dropped_ref = weakref.ref(dropped)
    del dropped
    before = gc.get_freeze_count()
    frozen = freeze_long_lived()
    assert dropped_ref() is None  # the cycle was collected before the freeze, not frozen
    assert frozen == gc.get_freeze_count() > before
    assert kept.me is kept


def test_cycles_made_after_the_freeze_are_still_collected():
    freeze_long_lived()
    later = weakref.ref(_Node())
    gc.collect()
    assert later() is None
