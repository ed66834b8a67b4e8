"""Schedules as data: the entries of ``search_spaces/schedules.yaml`` or a user's YAML file, each one mapping
read as a :class:`~x3dsearch.proxy_policy.ProxyPolicy` around its :class:`~x3dsearch.recipe.Recipe`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

from .errors import ConfigError
from .fields import load_yaml, read_yaml
from .proxy_policy import ProxyPolicy

__all__ = ["load_schedule", "schedule_names"]

_SHIPPED = "schedules.yaml"
DEFAULT_PROXY = "cpu_proxy_fast"  # the searches' proxy when none is named (cpu_proxy_lean until 2026-12-07)
DEFAULT_FULL = "cpu_long_full"  # the searches' final training when none is named (cpu_full until 2026-12-06)


def _shipped() -> dict[str, Any]:
    text = resources.files("x3dsearch.search_spaces").joinpath(_SHIPPED).read_text()
    return load_yaml(text)["schedules"]


def schedule_names(kind: Literal["proxy", "full"] | None = None) -> list[str]:
    """Names of the schedules shipped in ``schedules.yaml``: all, or of one ``kind``.

    A proxy schedule's name holds ``proxy``, a full (final) training's ends in ``_full``.
    """
    names = list(_shipped())
    if kind is None:
        return names
    return [n for n in names if ("proxy" in n.split("_") if kind == "proxy" else n.endswith("_full"))]


def load_schedule(name_or_path: str | Path) -> ProxyPolicy:
    """A shipped schedule by name (e.g. ``cpu_proxy``) or a YAML file holding one schedule mapping; its
    ``recipe`` is how one training runs (what a final training uses)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        data = read_yaml(path, "schedule file")
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: a schedule file must hold a mapping of field: value")
        try:
            return ProxyPolicy.from_dict({"name": path.stem, **data})
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    shipped = _shipped()
    if str(name_or_path) not in shipped:
        raise ConfigError(f"unknown schedule {str(name_or_path)!r}; choose from {', '.join(shipped)} or give a YAML file")
    return ProxyPolicy.from_dict({"name": str(name_or_path), **shipped[str(name_or_path)]})
