"""One registry that maps attention names to modules.

Every attention variant is one small module that decorates its class with
`@register(...)`; the model, trainer, bench and suite only ever ask this registry.
Adding a variant touches one file (plus its test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from torch import nn

from rabench.errors import RabenchError


@dataclass(frozen=True)
class AttentionSpec:
    """What an attention module needs to know about its place in the model."""

    n_head: int
    head_dim: int
    n_embd: int
    layer_idx: int
    n_layer: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttentionEntry:
    name: str
    cls: type[nn.Module]
    summary: str
    defaults: dict[str, Any]
    family: str  # "standard" or "ra": which side of the comparison it is on
    needs_gpu: bool = False  # runs only on a CUDA GPU (or under Triton's interpreter)
    variant: bool = False  # one of the plan's optimisation directions (question 5), not a core RA route


_REGISTRY: dict[str, AttentionEntry] = {}


def register(name: str, summary: str, family: str, needs_gpu: bool = False, variant: bool = False,
             **defaults: Any) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make `cls` available as `--attn name` with option defaults."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} registered twice")
        _REGISTRY[name] = AttentionEntry(name, cls, summary, dict(defaults), family, needs_gpu, variant)
        return cls

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def entry(name: str) -> AttentionEntry:
    if name not in _REGISTRY:
        raise RabenchError(f"unknown attention {name!r}; choose from: {', '.join(names())}")
    return _REGISTRY[name]


def resolve_options(name: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults of `name` overridden by `given`, each value coerced to its default's type."""
    defaults = entry(name).defaults
    resolved = dict(defaults)
    for key, value in (given or {}).items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise RabenchError(f"attention {name!r} has no option {key!r} (options: {known})")
        resolved[key] = _coerce(name, key, value, defaults[key])
        if isinstance(resolved[key], float) and not math.isfinite(resolved[key]):  # would surface as a NaN loss
            raise RabenchError(f"attention {name!r} option {key}={value!r}: must be a finite number")
    return resolved


def parse_option_strings(items: list[str] | None) -> dict[str, str]:
    """Turn ['p=0.1', 'layers=4,5,6'] into {'p': '0.1', 'layers': '4,5,6'}."""
    options: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RabenchError(f"attention option {item!r} is not of the form key=value")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def build(name: str, spec: AttentionSpec) -> nn.Module:
    """Instantiate attention `name` for one layer; its spec.options arrive resolved (defaults filled, types coerced)."""
    return entry(name).cls(replace(spec, options=resolve_options(name, spec.options)))


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(int(v) for v in value.split(",") if v.strip() != "")
    except ValueError:
        raise RabenchError(f"attention {name!r} option {key}={value!r}: expected {type(default).__name__}") from None
    return value
