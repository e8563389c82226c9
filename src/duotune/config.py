"""Config plumbing: pydantic v2 base model, YAML loading, dotted `key=value` overrides, clear errors.

Each subsystem defines its own config models on `Cfg`; a registry-backed field uses
`RegistryName(registry)` so unknown names fail at load time with the valid choices.
Imports pydantic, yaml and `duotune.errors`/`duotune.registry`/`duotune.jsonl` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from duotune import jsonl
from duotune.errors import ConfigError, UnknownNameError, did_you_mean
from duotune.registry import Registry

C = TypeVar("C", bound=BaseModel)


class Cfg(BaseModel):
    """Base for every duotune config model: unknown keys are errors, values are validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def RegistryName(registry: Registry[Any]) -> Any:  # noqa: N802 - used like a type
    """An `str` field whose value must be a name in `registry` (validated when the config loads)."""
    return Annotated[str, AfterValidator(registry.validate)]


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b.c=1' -> (['a', 'b', 'c'], 1); the value is parsed as YAML (so 1e-6, true, [1,2] work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. trainer.lr=1e-6)")
    key, raw = item.split("=", 1)
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted overrides to a nested dict in place (creating sub-dicts) and return it.

    A number indexes a list: `stages.1.steps=20` sets the second stage's steps."""
    for item in overrides:
        keys, value = parse_override(item)
        node: Any = data
        for k in keys[:-1]:
            if isinstance(node, list):
                node = node[_index(item, node, k)]
                continue
            if node.get(k) is None:
                node[k] = {}
            if not isinstance(node[k], (dict, list)):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
            node = node[k]
        if isinstance(node, list):
            node[_index(item, node, keys[-1])] = value
        else:
            node[keys[-1]] = value
    return data


def _index(item: str, node: list[Any], key: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"override {item!r}: {key!r} is not an index of a list of {len(node)}")
    return int(key)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or non-mapping file is a `ConfigError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys to values")
    return data


def build(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    """Validate `data` into `cls`; the first error becomes one line naming the key and the fix."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {format_validation_error(cls, e)}") from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> C:
    """YAML file (optional) + `key=value` overrides -> a validated `cls` instance."""
    data = dict(base or {})
    if path is not None:
        data.update(read_yaml(path))
    apply_overrides(data, overrides)
    return build(cls, data, source=str(path) if path else "config")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (the run folder's `config.yaml`), atomically: a kill midway
    leaves the previous file, never half of one."""
    jsonl.write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def format_validation_error(cls: type[BaseModel], err: ValidationError) -> str:
    """One line for the first pydantic error: the dotted key, what is wrong, the valid choices."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc) or "(root)"
    if first["type"] == "extra_forbidden":
        valid = _fields_at(cls, loc[:-1])
        return (f"unknown key {key!r}; valid keys here: {', '.join(valid)}"
                + did_you_mean(loc[-1], valid))
    ctx_err = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_err, UnknownNameError):
        return f"{key}: {ctx_err}"
    if isinstance(ctx_err, ConfigError):  # a validator's own one-line message says where
        return str(ctx_err) if key == "(root)" else f"{key}: {ctx_err}"
    return f"{key}: {first['msg']} (got {first.get('input')!r})"


def _fields_at(cls: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the sub-model reached by following `loc` from `cls`."""
    model: Any = cls
    for part in loc:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            break
        ann = fields[part].annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)
                    and issubclass(a, BaseModel)), None)
        if sub is None:
            break
        model = sub
    return sorted(getattr(model, "model_fields", {}))


def describe_fields(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field, recursing into sub-models (CLI help)."""
    rows: list[tuple[str, str, str]] = []
    for name, f in cls.model_fields.items():
        key = f"{prefix}{name}"
        ann = f.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is not None:
            rows.extend(describe_fields(sub, prefix=f"{key}."))
        else:
            default = "(required)" if f.is_required() else repr(f.get_default(call_default_factory=True))
            rows.append((key, default, f.description or ""))
    return rows
