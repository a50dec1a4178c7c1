"""Every patch of Megatron/Bridge/torch/Oumi internals is listed in `oumi_megatron.patches`, and
each target exists in the installed version with the parameters its stand-in expects; a
changed target stops the run with a message naming the patch and the fix."""

from __future__ import annotations

import inspect

import pytest

from oumi_megatron import patches


@pytest.mark.parametrize("patch", patches.PATCHES, ids=lambda p: p.name)
def test_target_fits_the_installed_version(patch):
    patches.check(patch.name)  # raises PatchMismatch otherwise
    if patch.params is not None:
        original = patches.remember(patch.name)
        assert tuple(inspect.signature(original).parameters) == patch.params


def test_a_changed_signature_is_refused_with_a_named_fix(monkeypatch):
    patch = patches.by_name("packed-rope")
    changed = patches.Patch(**{**vars(patch), "params": ("t", "cu_seqlens")})
    monkeypatch.setattr(
        patches, "PATCHES", tuple(changed if p.name == patch.name else p for p in patches.PATCHES)
    )
    with pytest.raises(patches.PatchMismatch) as err:
        patches.check("packed-rope")
    message = str(err.value)
    assert message.startswith("patch 'packed-rope' (")
    assert "megatron-core " in message and "Fix: install the versions in uv.lock" in message


def test_a_missing_target_is_refused(monkeypatch):
    gone = patches.Patch("gone", "megatron.core.transformer.utils:no_such_function", "all",
                         "model.rope", "test")  # fmt: skip
    monkeypatch.setattr(patches, "PATCHES", (*patches.PATCHES, gone))
    with pytest.raises(patches.PatchMismatch, match="no_such_function is missing"):
        patches.check("gone")


def test_cpu_patches_are_not_applied_where_cuda_is(monkeypatch):
    from oumi_megatron.parallel import cpu_compat

    monkeypatch.setattr(cpu_compat, "_APPLIED", False)
    monkeypatch.setattr(cpu_compat, "cuda_available", lambda: True)
    applied = []
    monkeypatch.setattr(cpu_compat, "_install_cpu_rng_tracker", lambda: applied.append(1))
    cpu_compat.apply_cpu_compat()
    assert applied == [] and cpu_compat._APPLIED is False


def test_each_patch_is_checked_where_it_is_applied():
    from pathlib import Path

    root = Path(patches.__file__).parent
    for patch in patches.PATCHES:
        source = (root / f"{patch.where.replace('.', '/')}.py").read_text()
        if patch.scope == "cpu":
            assert 'patches.check_all("cpu")' in source, patch.name
        elif patch.target:
            assert f'patches.check("{patch.name}")' in source, patch.name
