"""Config helpers: one TOML file per daemon read into a validated model.

Precedence: explicit overrides (command-line flags) > environment (``PREFIX_FIELD``) > file >
model defaults. Secrets and keys are referenced by path, never inlined.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fedoversight.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_config(
    model: type[M],
    path: Path | None,
    *,
    env_prefix: str,
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> M:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
        base = path.parent
        data = _resolve_paths(model, data, base)
    env = os.environ if environ is None else environ
    for name in model.model_fields:
        key = f"{env_prefix}{name}".upper()
        if key in env:
            data[name] = env[key]
    for name, value in (overrides or {}).items():
        if value is not None:
            data[name] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        raise ConfigError(
            f"invalid configuration{where}:\n{describe_validation_error(exc)}"
        ) from exc


#: What pydantic says, in the words of a config file.
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required, not given",
}


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming its key as the file spells it (``a.b``, ``a[2].b``)
    and saying what is wrong, without pydantic's type names or documentation links."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        key = _key_path(error["loc"])
        message = _MESSAGES.get(error["type"], error["msg"])
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        lines.append(f"  {key}: {message}" if key else f"  {message}")
    return "\n".join(lines)


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part.startswith(("function-", "union")):
            continue  # pydantic's name of a type or validator, not a key of the file
        else:
            out += f".{part}" if out else part
    return out


def _resolve_paths(model: type[BaseModel], data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in a config file are relative to the file."""
    out = dict(data)
    for name, field in model.model_fields.items():
        value = out.get(name)
        # ``X | None`` and ``X`` alike: look at every member of the annotation.
        members = typing.get_args(field.annotation) or (field.annotation,)
        if isinstance(value, str) and Path in members and not Path(value).is_absolute():
            out[name] = str(base / value)
        elif isinstance(value, dict):
            nested = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if nested:
                out[name] = _resolve_paths(nested[0], value, base)
    return out
