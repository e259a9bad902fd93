"""Typed YAML configs with ``key.sub=value`` overrides, shared by every stage.

A config file holds only what differs from the defaults of a pydantic v2 model whose every
sub-model forbids unknown keys, so a typo fails with its dotted path::

    from pydantic import BaseModel
    from common.configio import StrictModel, load_config

    class Optim(StrictModel):
        lr: float = 3.0e-4

    class Cfg(StrictModel):
        optim: Optim = Optim()

    cfg = load_config(Cfg, None, ["optim.lr=1.0e-3"])   # Cfg(optim=Optim(lr=0.001))

Override values are parsed as YAML (``a.b=[1,2]``, ``a.c=true``, ``a.d=null``), except that
numbers written as ``1e-4`` (which YAML 1.1 reads as a string) are read as floats.

This module is pure apart from reading the one YAML file it is given; it imports no torch.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ConfigError", "StrictModel", "load_config", "apply_overrides", "dump_config", "format_validation_error"]

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file, the dotted key and the fix."""


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are an error, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _parse_value(text: str) -> Any:
    if _FLOAT_RE.match(text.strip()):
        return float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _fix_yaml_floats(node: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string; read such strings as floats, as a user would expect."""
    if isinstance(node, dict):
        return {k: _fix_yaml_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_yaml_floats(v) for v in node]
    if isinstance(node, str) and _FLOAT_RE.match(node.strip()):
        return float(node)
    return node


def apply_overrides(data: dict[str, Any], overrides: list[str], *, source: str = "command line") -> dict[str, Any]:
    """Return a copy of ``data`` with each ``dotted.key=value`` override applied."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key.sub=value")
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{source}: override {item!r} has an empty key part")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            elif not isinstance(child, dict):
                raise ConfigError(f"{source}: cannot set {key!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = _parse_value(raw)
    return out


def format_validation_error(err: ValidationError, source: str, overrides: list[str] | None = None) -> str:
    """One line per problem, naming the dotted key and where it was set (the file or a command-line override)."""
    by_key = {item.partition("=")[0].strip(): item for item in overrides or []}
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        # An error inside a key the command line set is blamed on that override, not on the file; so is an error
        # on a whole section (``model``, a cross-field rule at the root) whose message names a key an override set.
        item = next((v for k, v in by_key.items() if loc == k or loc.startswith(k + ".")), None)
        if item is None:
            section = "" if loc == "<root>" else loc + "."
            named = [
                v for k, v in by_key.items() if k.startswith(section) and re.search(rf"\b{re.escape(k)}\b", e["msg"])
            ]
            item = " ".join(repr(v) for v in named) if named else None
            where = f"command-line override {item}" if item else source
        else:
            where = f"command-line override {item!r}"
        if e["type"] == "extra_forbidden":
            hint = "check its spelling against the defaults (--dry-run prints them)"
            lines.append(f"{where}: unknown key {loc!r}; {hint}")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{where}: {loc}: {e['msg']}{got_s}")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing file with --config (see configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file and rerun") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return _fix_yaml_floats(data)


def load_config(model: type[M], path: str | Path | None, overrides: list[str] | None = None) -> M:
    """Read ``path`` (YAML, may be None), apply overrides, validate against ``model``."""
    data = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    data = apply_overrides(data, list(overrides or []))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, list(overrides or []))) from None


def dump_config(cfg: BaseModel) -> str:
    """The fully resolved config as YAML (every default written out), for run directories and --dry-run."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
