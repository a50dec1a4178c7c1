"""Reward function lookup: our built-ins, Oumi's REWARD_FUNCTION registry, or an import path.

A name in ``grpo.reward_functions`` resolves, case-insensitively, to:
1. one of our built-ins (``BUILTIN_REWARDS``); these are also registered in Oumi's registry
   under the same names when Oumi loads its own rewards, so Oumi's TRL_GRPO trainer can use
   them too;
2. an import path ``package.module:function`` or ``package.module.function`` (any name with a
   ``.`` or ``:``);
3. any other entry of Oumi's registry (Oumi's own rewards, or ones users ``@register``).
Only step 3 looks into Oumi's registry, which imports ``oumi.datasets`` (~7 s per process on a
small machine): built-ins and import paths resolve without it, and our reward modules never
import Oumi.

Oumi's ``countdown``/``gsm8k``/``rar_medicine_verl`` use VERL's signature
(``data_source, solution_str, ground_truth, extra_info``); MEGATRON_GRPO calls rewards TRL-style,
so those names are rejected with the built-in to use instead.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from oumi_megatron.rewards.arithmetic import arithmetic_dense, arithmetic_exact
from oumi_megatron.rewards.countdown import countdown_equation
from oumi_megatron.rewards.format import format_reward
from oumi_megatron.rewards.gsm8k import gsm8k_accuracy

logger = logging.getLogger(__name__)

RewardFn = Callable[..., Sequence[float | None]]

BUILTIN_REWARDS: Final[dict[str, RewardFn]] = {
    "gsm8k_accuracy": gsm8k_accuracy,
    "countdown_equation": countdown_equation,
    "format_reward": format_reward,
    "arithmetic_dense": arithmetic_dense,
    "arithmetic_exact": arithmetic_exact,
}
# Oumi rewards with VERL's signature -> our TRL-style equivalent (None: there is none).
VERL_STYLE_EQUIVALENTS: Final[dict[str, str | None]] = {
    "countdown": "countdown_equation",
    "gsm8k": "gsm8k_accuracy",
    "rar_medicine_verl": None,
}
# Oumi rewards that read TRL's conversational completions (``c[0]["content"]``).
_CONVERSATIONAL_OUMI_REWARDS: Final = frozenset({"count_letters"})


class RewardResolutionError(ValueError):
    """A reward function name that cannot be resolved, with the available names."""


@dataclass(frozen=True)
class RewardFunction:
    """A resolved reward function with its configured kwargs (they override dataset columns)."""

    name: str
    fn: RewardFn
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    source: str = "builtin"  # "builtin" | "oumi" | "import"
    conversational: bool = False
    # Parameter names the function accepts; None when it takes **kwargs (TRL's convention).
    accepted: frozenset[str] | None = None

    def __call__(
        self, completions: Sequence[str], prompts: Sequence[str] | None = None, **columns: Any
    ) -> list[float | None]:
        kwargs = {"prompts": prompts, **columns, **self.kwargs}
        if self.accepted is not None:
            # A function without **kwargs would reject unrelated columns: pass only its own.
            kwargs = {k: v for k, v in kwargs.items() if k in self.accepted}
        args: Sequence[Any] = completions
        if self.conversational:
            args = [[{"role": "assistant", "content": c}] for c in completions]
        return list(self.fn(args, **kwargs))


def _accepted_params(fn: Callable[..., Any]) -> frozenset[str] | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins / C callables: trust TRL's convention
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


def _oumi_registry() -> Any | None:
    """Oumi's REGISTRY with its GRPO rewards and our built-ins loaded; None without Oumi.

    Costs ~7 s per process on a small machine the first time: any lookup in Oumi's registry
    imports all of ``oumi.datasets``, ``oumi.models`` and ``oumi.launcher``.
    """
    try:
        import oumi.datasets.grpo.rewards  # noqa: F401  (registers Oumi's rewards)
        from oumi.core.registry import REGISTRY
    except ImportError:
        return None
    register_builtins(REGISTRY)
    return REGISTRY


def register_builtins(registry: Any) -> None:
    """Our built-ins into Oumi's ``registry`` under their names (idempotent).

    Also run when Oumi's reward builder loads Oumi's own rewards (a hook in ``registration``),
    so that Oumi's trainers find ours without anyone calling this.
    """
    from oumi.core.registry import RegistryType

    for name, fn in BUILTIN_REWARDS.items():
        current = registry.get(name, RegistryType.REWARD_FUNCTION)
        if current is None:
            registry.register(name, RegistryType.REWARD_FUNCTION, fn)
        elif current is not fn:
            logger.warning("Oumi registry already has a different reward %r; ours wins here", name)


def register_with_oumi() -> bool:
    """Register our built-ins in Oumi's REWARD_FUNCTION registry (imports Oumi; idempotent).

    Returns False when Oumi is not installed.
    """
    return _oumi_registry() is not None


def _oumi_reward_names(registry: Any) -> list[str]:
    from oumi.core.registry import RegistryType

    return sorted(registry.get_all(RegistryType.REWARD_FUNCTION))


def available_reward_names(include_oumi: bool = True) -> list[str]:
    """Sorted names that resolve without an import path (Oumi's only if ``include_oumi``)."""
    names = set(BUILTIN_REWARDS)
    registry = _oumi_registry() if include_oumi else None
    if registry is not None:
        names.update(_oumi_reward_names(registry))
    return sorted(names)


def _import_path(path: str) -> RewardFn:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise RewardResolutionError(f"reward function {path!r}: expected 'package.module:function'")
    if module_name.endswith(".py") or "/" in module_name:
        module = _import_file(path, Path(module_name))
    else:
        module = _import_module(path, module_name)
    fn = getattr(module, attr, None)
    if fn is None:
        public = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise RewardResolutionError(
            f"reward function {path!r}: module {module_name!r} has no attribute {attr!r}."
            + _did_you_mean(attr, public)
        )
    if not callable(fn):
        raise RewardResolutionError(f"reward function {path!r} is not callable")
    return fn


def _import_module(path: str, module_name: str) -> Any:
    """``module_name``, also from the working directory (as ``python -m`` would find it,
    though console scripts and torchrun do not put it on ``sys.path``)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        cwd = str(Path.cwd())
        if error.name != module_name.split(".")[0] or cwd in sys.path:
            raise _not_importable(path, module_name, error) from error
        sys.path.append(cwd)
        try:
            return importlib.import_module(module_name)
        except ImportError as retry:
            sys.path.remove(cwd)
            raise _not_importable(path, module_name, retry) from retry
    except ImportError as error:
        raise _not_importable(path, module_name, error) from error


def _not_importable(path: str, module_name: str, error: Exception) -> RewardResolutionError:
    return RewardResolutionError(
        f"reward function {path!r}: cannot import module {module_name!r} ({error}; searched "
        f"the installed packages and {Path.cwd()}). Fix: install it, run from the directory "
        f"holding it, or give the file: 'path/to/{module_name.replace('.', '/')}.py:function'."
    )


def _import_file(path: str, file: Path) -> Any:
    """A reward module given as a file path (relative to the working directory)."""
    import importlib.util

    resolved = file.expanduser().resolve()
    if not resolved.is_file():
        raise RewardResolutionError(
            f"reward function {path!r}: file {str(file)!r} does not exist (looked in "
            f"{resolved.parent}). Fix: give its path from {Path.cwd()} or an absolute path."
        )
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]  # same name on every rank
    name = f"oumi_megatron_rewards_{resolved.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise RewardResolutionError(
            f"reward function {path!r}: importing {str(file)!r} failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    return module


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _verl_error(name: str) -> RewardResolutionError:
    equivalent = VERL_STYLE_EQUIVALENTS.get(name)
    fix = f"use {equivalent!r} instead" if equivalent else "wrap it in a TRL-style function"
    return RewardResolutionError(
        f"reward function {name!r} from Oumi's registry uses VERL's signature (data_source, "
        f"solution_str, ground_truth, extra_info), but MEGATRON_GRPO calls rewards TRL-style "
        f"fn(completions, prompts=..., **columns). Fix: {fix}."
    )


def resolve_reward_function(name: str, kwargs: Mapping[str, Any] | None = None) -> RewardFunction:
    """Resolve one name (see the module docstring) and bind its configured ``kwargs``."""
    key = name.strip().lower()
    kwargs = dict(kwargs or {})
    if key in BUILTIN_REWARDS:
        fn = BUILTIN_REWARDS[key]
        return RewardFunction(key, fn, kwargs, "builtin", accepted=_accepted_params(fn))
    if "." in name or ":" in name:
        fn = _import_path(name.strip())
        return RewardFunction(name, fn, kwargs, "import", accepted=_accepted_params(fn))
    registry = _oumi_registry()
    fn = registry.get_reward_function(key) if registry is not None else None
    if fn is None:
        names = available_reward_names(include_oumi=registry is not None)
        raise RewardResolutionError(
            f"unknown reward function {name!r}.{_did_you_mean(key, names)} Available: "
            f"{', '.join(names)}; or give an import path 'package.module:function'."
        )
    accepted = _accepted_params(fn)
    if key in VERL_STYLE_EQUIVALENTS or (accepted is not None and "solution_str" in accepted):
        raise _verl_error(key)
    conversational = key in _CONVERSATIONAL_OUMI_REWARDS
    return RewardFunction(key, fn, kwargs, "oumi", conversational, accepted)


def resolve_reward_functions(
    names: Sequence[str], kwargs_by_name: Mapping[str, Mapping[str, Any]] | None = None
) -> list[RewardFunction]:
    """Resolve ``grpo.reward_functions`` with ``grpo.reward_function_kwargs`` (keyed by name)."""
    kwargs_by_name = kwargs_by_name or {}
    unknown_kwargs = sorted(set(kwargs_by_name) - set(names))
    if unknown_kwargs:
        raise RewardResolutionError(
            f"reward_function_kwargs has entries {unknown_kwargs} not in reward_functions "
            f"{list(names)}"
        )
    resolved = [resolve_reward_function(n, kwargs_by_name.get(n)) for n in names]
    seen: set[str] = set()
    for function in resolved:
        if function.name in seen:
            raise RewardResolutionError(
                f"reward function {function.name!r} is listed twice; list it once (use "
                f"reward_weights to weigh it)"
            )
        seen.add(function.name)
    return resolved
