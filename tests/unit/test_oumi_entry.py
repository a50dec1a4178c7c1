"""How `oumi train` and `oumi.train(config)` reach the Megatron trainers (oumi_entry.py).

The contract tests fail, with the reason, when an Oumi upgrade changes the functions the routing
wraps; the routing itself is exercised end to end in tests/integration/test_oumi_launch.py.
"""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import pytest

from oumi_megatron import oumi_entry

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "recipes" / "tiny_grpo_cpu.yaml"


def test_pinned_oumi_has_the_functions_we_route():
    import oumi.cli.train
    import oumi.train

    oumi_entry.check_oumi_function(oumi.cli.train, "train", ("ctx", "config"))
    oumi_entry.check_oumi_function(oumi.train, "train", ("config",))
    assert not oumi_entry.oumi_has_plugin_registry()


def test_oumi_cli_registers_the_routed_train_command():
    """`oumi train` dispatches through our wrapper; the typer signature is Oumi's own."""
    import inspect

    import oumi.cli.train
    import oumi.train
    from oumi.cli.main import get_app

    commands = {c.callback.__name__: c.callback for c in get_app().registered_commands}
    routed = commands["train"]
    assert getattr(routed, "__oumi_megatron_route__", False), (
        "oumi.cli.main registered an unrouted train command: Oumi's CLI changed how it imports "
        "commands; update oumi_megatron/oumi_entry.py"
    )
    assert inspect.signature(routed) == inspect.signature(routed.__wrapped__)
    assert getattr(oumi.train.train, "__oumi_megatron_route__", False)
    assert oumi.cli.train.train is routed


def test_a_changed_oumi_function_is_reported_not_wrapped():
    module = types.ModuleType("oumi.cli.train")
    module.train = lambda context, recipe: None  # renamed parameters
    with pytest.warns(RuntimeWarning, match=r"no longer takes ctx, config.*oumi-megatron train"):
        oumi_entry.route_cli_train(module)
    assert not hasattr(module.train, "__oumi_megatron_route__")
    missing = types.ModuleType("oumi.train")
    with pytest.warns(RuntimeWarning, match="oumi.train.train is missing"):
        oumi_entry.route_train_api(missing)


def test_wrapping_twice_wraps_once():
    module = types.ModuleType("oumi.train")
    module.train = lambda config: "oumi"
    oumi_entry.route_train_api(module)
    first = module.train
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        oumi_entry.route_train_api(module)
    assert module.train is first


def test_other_trainers_go_to_oumi(monkeypatch):
    module = types.ModuleType("oumi.train")
    calls = []
    module.train = lambda config, **kw: calls.append((config, kw)) or "oumi ran it"
    oumi_entry.route_train_api(module)
    config = types.SimpleNamespace(training=types.SimpleNamespace(trainer_type="TRL_GRPO"))
    assert module.train(config, verbose=True) == "oumi ran it"
    assert calls == [(config, {"verbose": True})]
    ran = []
    monkeypatch.setattr("oumi_megatron.run.run_training", lambda c: ran.append(c))
    megatron = types.SimpleNamespace(training=types.SimpleNamespace(trainer_type="MEGATRON_GRPO"))
    assert module.train(megatron) is None
    assert ran == [megatron] and len(calls) == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [("MEGATRON_GRPO", True), ("megatron_grpo", True), ("MEGATRON_SFT", True),
     ("TRL_GRPO", False), ("trl_sft", False), (None, False), (3, False)],
)  # fmt: skip
def test_is_megatron_trainer(name, expected):
    assert oumi_entry.is_megatron_trainer(name) is expected


def test_is_megatron_trainer_takes_the_enum():
    from oumi.core.configs import TrainerType

    import oumi_megatron.config  # noqa: F401  (registers the members)

    assert oumi_entry.is_megatron_trainer(TrainerType["MEGATRON_GRPO"])
    assert not oumi_entry.is_megatron_trainer(TrainerType.TRL_GRPO)


def test_peek_trainer_type(tmp_path):
    assert oumi_entry.peek_trainer_type(RECIPE, []) == "MEGATRON_GRPO"
    assert oumi_entry.peek_trainer_type(RECIPE, ["training.trainer_type=TRL_GRPO"]) == "TRL_GRPO"
    assert oumi_entry.peek_trainer_type(tmp_path / "missing.yaml", []) is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed")
    assert oumi_entry.peek_trainer_type(bad, []) is None


class _Ctx:
    """What `megatron_recipe` reads of typer's context: extra args and declared options."""

    def __init__(self, args, params=None):
        self.args = args
        self.params = params or {}
        option = types.SimpleNamespace(opts=["--training.output_dir"], name="output_dir")
        self.command = types.SimpleNamespace(params=[option])


def test_megatron_recipe_collects_every_override_form():
    ctx = _Ctx(
        ["--training.max_steps", "3", "--grpo.temperature=0.7", "megatron.micro_batch_size=4"],
        {"output_dir": "/tmp/run"},
    )
    path, overrides = oumi_entry.megatron_recipe(ctx, str(RECIPE))
    assert path == str(RECIPE)
    assert overrides == [
        "training.max_steps=3",
        "grpo.temperature=0.7",
        "megatron.micro_batch_size=4",
        "training.output_dir=/tmp/run",
    ]


def test_megatron_recipe_leaves_other_recipes_to_oumi(tmp_path):
    assert (
        oumi_entry.megatron_recipe(_Ctx(["--training.trainer_type", "TRL_SFT"]), str(RECIPE))
        is None
    )
    other = tmp_path / "sft.yaml"
    other.write_text("training:\n  trainer_type: TRL_SFT\n")
    assert oumi_entry.megatron_recipe(_Ctx([]), str(other)) is None


def test_megatron_recipe_refuses_stray_arguments():
    with pytest.raises(SystemExit, match=r"unexpected argument\(s\) \['stray'\]"):
        oumi_entry.megatron_recipe(_Ctx(["stray"]), str(RECIPE))


def test_plugin_entry_names_importable_callables():
    import importlib

    entry = oumi_entry.plugin_entry()
    assert entry["trainer_types"]["MEGATRON_GRPO"] == "megatron_grpo"
    for key in ("load_config", "train"):
        module, name = entry[key].split(":")
        assert callable(getattr(importlib.import_module(module), name))


def test_upstream_patch_applies_to_the_pinned_oumi(tmp_path):
    """docs/upstream/oumi-trainer-plugins.patch stays a ready patch for the Oumi we pin."""
    import shutil
    import subprocess

    import oumi

    patch = Path(__file__).resolve().parents[2] / "docs" / "upstream" / "oumi-trainer-plugins.patch"
    installed = Path(oumi.__file__).parent
    for name in ("core/configs/params/training_params.py", "cli/train.py", "train.py",
                 "builders/training.py"):  # fmt: skip
        (tmp_path / "oumi" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(installed / name, tmp_path / "oumi" / name)
    check = subprocess.run(["git", "apply", "--check", "-p2", str(patch)], cwd=tmp_path,
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
