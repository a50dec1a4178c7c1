"""``load_config``: YAML file + Oumi-style dotted overrides -> ``MegatronTrainingConfig``.

Steps, all in memory (nothing is written to disk):
1. read the YAML with Oumi's default of *not* interpolating ``${...}``;
2. apply ``key=value`` overrides with OmegaConf, as Oumi's CLI does;
3. reject unknown keys anywhere (with a did-you-mean): a walker for Oumi's sections, pydantic
   for ours;
4. move Oumi alias keys onto our sections (``aliases.py``), raising on conflicts;
5. validate ``megatron:``/``grpo:`` with pydantic (the problems of 3–5 are reported together)
   and build Oumi's sections with OmegaConf exactly like ``TrainingConfig.from_yaml`` does;
6. run Oumi's ``__post_init__`` checks and ours (``static_checks.py``).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from oumi.core.configs import TrainingConfig
from oumi.exceptions import OumiConfigError

from oumi_megatron.config.aliases import merge_raw_aliases
from oumi_megatron.config.errors import ConfigError, Problems
from oumi_megatron.config.grpo_params import GrpoParams
from oumi_megatron.config.megatron_params import MegatronParams
from oumi_megatron.config.pydantic_errors import validate_section
from oumi_megatron.config.schema import check_unknown_keys
from oumi_megatron.config.static_checks import check_static
from oumi_megatron.config.training_config import MegatronTrainingConfig

_UNESCAPED_INTERPOLATION = re.compile(r"(?<!\\)\$\{")


def _omegaconf_error(e: OmegaConfBaseException, what: str) -> ConfigError:
    key = getattr(e, "full_key", None)
    # OmegaConf appends "full_key: ... object_type=..." lines; the first line is the message.
    msg = (getattr(e, "msg", None) or str(e)).splitlines()[0]
    if isinstance(e, MissingMandatoryValue) and key:
        return ConfigError(
            f"'{key}' is required but not set. Fix: set it in the YAML or with '{key}=...'."
        )
    where = f" at '{key}'" if key else ""
    return ConfigError(f"Invalid {what}{where}: {msg}")


def _parse(text: str, overrides: list[str], source: str) -> dict[str, Any]:
    # Oumi's from_yaml_and_arg_list escapes "${" in files by default (no interpolation).
    escaped = _UNESCAPED_INTERPOLATION.sub(r"\\${", text)
    try:
        tree = OmegaConf.create(escaped)
    except OmegaConfBaseException as e:
        raise _omegaconf_error(e, f"YAML in {source}") from e
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(f"Cannot parse YAML in {source}: {e}") from e
    if not isinstance(tree, DictConfig):
        raise ConfigError(f"{source} must hold a mapping of sections (model:, training:, ...).")
    dotlist = []
    for item in overrides:
        key, sep, _ = item.removeprefix("--").partition("=")
        if not sep or not key:
            raise ConfigError(
                f"Invalid override {item!r}. Fix: write overrides as 'section.key=value', "
                f"e.g. 'training.max_steps=3'."
            )
        dotlist.append(item.removeprefix("--"))
    try:
        tree.merge_with_dotlist(dotlist)
        return OmegaConf.to_container(tree, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _omegaconf_error(e, "override") from e


def _escape(value: Any) -> Any:
    """Re-escapes ``${`` so OmegaConf keeps literal strings literal (see step 1)."""
    if isinstance(value, str):
        return _UNESCAPED_INTERPOLATION.sub(r"\\${", value)
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _build_oumi_sections(tree: dict[str, Any]) -> dict[str, Any]:
    """Oumi's sections as objects, typed and defaulted by OmegaConf like Oumi does."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainingConfig), _escape(tree))
        # Instantiate per section so TrainingConfig.__post_init__ runs once, later.
        return {
            f.name: OmegaConf.to_object(merged[f.name]) for f in dataclasses.fields(TrainingConfig)
        }
    except OmegaConfBaseException as e:
        raise _omegaconf_error(e, "value") from e
    except OumiConfigError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{e} (raised by Oumi's config checks)") from e


def load_config_from_str(
    text: str, overrides: list[str] | None = None, *, source: str = "<string>", check: bool = True
) -> MegatronTrainingConfig:
    """Like ``load_config`` but from YAML text; ``source`` names it in messages."""
    tree = _parse(text, list(overrides or []), source)
    problems = Problems()
    # Keys: the walker for the top level and Oumi's dataclass sections (OmegaConf's own
    # messages have no hint); pydantic (extra="forbid") for ours, below. Reported together.
    ours = {name: tree[name] for name in ("megatron", "grpo") if name in tree}
    problems.check(check_unknown_keys, {**tree, **dict.fromkeys(ours, {})}, MegatronTrainingConfig)
    problems.check(merge_raw_aliases, tree)
    megatron = problems.check(validate_section, tree.pop("megatron", None), MegatronParams,
                              "megatron")  # fmt: skip
    grpo = problems.check(validate_section, tree.pop("grpo", None), GrpoParams, "grpo")
    problems.raise_if_any()
    cfg = MegatronTrainingConfig(**_build_oumi_sections(tree), megatron=megatron, grpo=grpo)
    if check:
        check_static(cfg)
    return cfg


def load_config(
    path: str | Path, overrides: list[str] | None = None, *, check: bool = True
) -> MegatronTrainingConfig:
    """Loads and checks a recipe; ``overrides`` are ``a.b.c=value`` strings (CLI order).

    ``check=False`` leaves the config-only checks (``check_static``) to a later
    ``validate_config``, which reports them together with the world-size and model checks.

    Raises:
        ConfigError: for any problem, before anything is built or written.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"Config file not found: '{path}'. Fix: pass the path of a YAML recipe.")
    return load_config_from_str(file.read_text(), overrides, source=str(path), check=check)
