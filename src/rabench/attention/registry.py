"""One resolver that maps an attention reference to its module.

A reference is any of:
  - a built-in name (`sdpa`, `ra-triton`, ...): a module in this package decorates its class
    with `@register(...)`;
  - the name of an entry point in the `rabench.attentions` group, declared by an installed
    package (`diff = "mypkg.diff:DiffAttention"` in its pyproject.toml);
  - `package.module:ClassName`, imported;
  - `path/to/file.py:ClassName`, loaded from that file (relative to the working directory).

The model, trainer, suite, calibration, bench and report all resolve attentions through
`entry(ref)`, and run folders record the reference itself, so worker processes, torchrun
ranks and resumed runs resolve the same code from the run folder. Plug-ins declare their
options, summary and role as class attributes (see `rabench.attention.base.AttentionCore`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import re
import sys
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

from torch import nn

from rabench.attention.base import AttentionCore
from rabench.attention.spec import AttentionSpec
from rabench.errors import RabenchError
from rabench.experiment import BASELINE

ENTRY_POINT_GROUP = "rabench.attentions"
# What a config is in the comparison, recorded in config.json as labels.attn_role.
ROLES = ("baseline", "ra", "control", "ra-variant", "candidate")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class AttentionEntry:
    name: str  # the reference it was resolved from (a built-in name, an entry point or module:Class)
    cls: type[nn.Module]
    summary: str
    defaults: dict[str, Any]
    family: str  # "standard" or "ra": which side of the comparison it is on
    needs_gpu: bool = False  # runs only on a CUDA GPU (or under Triton's interpreter)
    variant: bool = False  # one of the plan's optimisation directions (question 5), not a core RA route
    plugin: bool = False  # defined outside rabench (entry point, module:Class or file:Class)
    role: str = ""  # one of ROLES; "" -> derived from family and variant

    @property
    def attn_role(self) -> str:
        """baseline, ra, ra-variant, control (the built-ins) or what a plug-in declares (default candidate)."""
        if self.role:
            return self.role
        if self.name == BASELINE:
            return "baseline"
        if self.family == "ra":
            return "ra-variant" if self.variant else "ra"
        return "control"

    @property
    def code_hash(self) -> str:
        """sha256 (12 hex digits) of the source file that defines the class: a changed file is a changed config."""
        return module_code_hash(self.cls)


_REGISTRY: dict[str, AttentionEntry] = {}  # the built-ins, by name
_RESOLVED: dict[str, AttentionEntry] = {}  # plug-in references resolved in this process


def register(name: str, summary: str, family: str, needs_gpu: bool = False, variant: bool = False,
             **defaults: Any) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make `cls` available as `--attn name` with option defaults."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} registered twice")
        e = AttentionEntry(name, cls, summary, dict(defaults), family, needs_gpu, variant)
        _REGISTRY[name] = e
        # the same class attributes a plug-in declares, so both kinds read alike (see base.py)
        cls.summary, cls.default_options, cls.needs_gpu, cls.role = summary, dict(defaults), needs_gpu, e.attn_role
        return cls

    return wrap


def names() -> list[str]:
    """Built-in names, then the entry points installed packages declare (both usable as --attn)."""
    return sorted(_REGISTRY) + sorted(n for n in plugin_entry_points() if n not in _REGISTRY)


def builtin_names() -> list[str]:
    return sorted(_REGISTRY)


def plugin_entry_points() -> dict[str, str]:
    """name -> 'module:Class' for every entry point of the rabench.attentions group."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def is_reference(ref: str) -> bool:
    """`module:Class` or `file.py:Class` (as opposed to a name)."""
    return ":" in ref


def entry(ref: str) -> AttentionEntry:
    """The attention `ref` names: built-in, entry point, `pkg.mod:Class` or `path/file.py:Class`."""
    if not isinstance(ref, str) or not ref:
        raise RabenchError(f"attention must be a name or a module:Class reference, got {ref!r}")
    if ref in _REGISTRY:
        return _REGISTRY[ref]
    key = _resolution_key(ref)
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve_plugin(ref)
    return _RESOLVED[key]


def file_reference(ref: Any) -> tuple[str, str] | None:
    """(file, class) of a `path/file.py:Class` reference, else None (a name or `module:Class`)."""
    if not isinstance(ref, str):
        return None
    where, _, cls_name = ref.rpartition(":")
    return (where, cls_name) if where.endswith(".py") else None


def _resolution_key(ref: str) -> str:
    """A file reference is cached by the file it names from here: one spelling may name two files
    from two working directories."""
    named = file_reference(ref)
    return f"{Path(named[0]).expanduser().resolve()}:{named[1]}" if named else ref


def folder_name(ref: str) -> str:
    """A run-folder-safe name for `ref`, from the string alone (no import): a built-in or
    entry-point name stays as it is; `x/diff.py:DiffAttention` gives `diff-attention`."""
    if not is_reference(ref):
        return ref
    cls_name = ref.rpartition(":")[2]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", cls_name).lower()


def resolve_options(name: str, given: dict[str, Any] | None, typed: bool = False) -> dict[str, Any]:
    """Defaults of `name` overridden by `given`, each value coerced to its default's type. `typed`:
    the values come from a file that has types (a suite plan), where a string is accepted only where a
    string is declared (`window = "64"` is a typo there, unlike --attn-opt's text)."""
    defaults = entry(name).defaults
    resolved = dict(defaults)
    for key, value in (given or {}).items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise RabenchError(f"attention {name!r} has no option {key!r} (options: {known})")
        if typed and isinstance(value, str) and not isinstance(defaults[key], str):
            raise RabenchError(f"attention {name!r} option {key} = {value!r} is a string; the option takes "
                               f"{type(defaults[key]).__name__} values (e.g. {key} = {defaults[key]!r})")
        resolved[key] = _coerce(name, key, value, defaults[key])  # a NaN option is refused there (_checked)
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


def module_code_hash(cls: type) -> str:
    """sha256 of the source file of `cls`'s module (12 hex digits)."""
    module = sys.modules.get(cls.__module__)
    try:
        path = inspect.getsourcefile(module) if module is not None else None
    except TypeError:
        path = None
    if path and Path(path).is_file():
        data = Path(path).read_bytes()
    else:  # no file (defined interactively): the class's own source, if Python can find it
        try:
            data = inspect.getsource(cls).encode()
        except (OSError, TypeError):
            data = cls.__qualname__.encode()
    return hashlib.sha256(data).hexdigest()[:12]


# ---- plug-ins -----------------------------------------------------------------------------------
def _resolve_plugin(ref: str) -> AttentionEntry:
    entry_points_by_name = plugin_entry_points()
    if ref in entry_points_by_name:
        cls = _load_class(entry_points_by_name[ref], ref)
    elif is_reference(ref):
        cls = _load_class(ref, ref)
    else:
        known = ", ".join(names())
        raise RabenchError(f"unknown attention {ref!r}; choose from: {known}, or give module.path:ClassName "
                           "or path/to/file.py:ClassName")
    return _plugin_entry(ref, cls)


def _load_class(target: str, ref: str) -> type[nn.Module]:
    """Import `module:Class` or `file.py:Class`; every failure is one line naming `ref`."""
    where, _, cls_name = target.rpartition(":")
    if not where or not cls_name:
        raise RabenchError(f"attention {ref!r}: write module.path:ClassName or path/to/file.py:ClassName")
    module = _load_file(where, ref) if where.endswith(".py") else _import_module(where, ref)
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise RabenchError(f"attention {ref!r}: {where} defines no {cls_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, AttentionCore)):
        raise RabenchError(f"attention {ref!r}: {cls_name} is not a subclass of rabench.attention.AttentionCore "
                           "(the contract: `rabench attentions --help`)")
    return cls


def _import_module(module_name: str, ref: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise RabenchError(f"attention {ref!r}: no module named {module_name!r} on the Python path") from None
        raise RabenchError(f"attention {ref!r}: importing {module_name} failed: {exc}") from None
    except Exception as exc:  # the plug-in's own code raised on import: say what, in one line
        raise RabenchError(f"attention {ref!r}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None


def _load_file(path_text: str, ref: str):
    """Load a plug-in file as a module once per process (registered in sys.modules under a name
    derived from its resolved path, so dataclasses, pickling and torch.compile can find it)."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise RabenchError(f"attention {ref!r}: no file {path} (relative paths start from {Path.cwd()})")
    resolved = path.resolve()
    module_name = "rabench_plugin_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise RabenchError(f"attention {ref!r}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise RabenchError(f"attention {ref!r}: loading {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def _plugin_entry(ref: str, cls: type[nn.Module]) -> AttentionEntry:
    """An entry from the class attributes a plug-in declares (see AttentionCore)."""
    defaults = getattr(cls, "default_options", None) or {}
    if not isinstance(defaults, dict):
        raise RabenchError(f"attention {ref!r}: default_options must be a dict of option -> default")
    role = getattr(cls, "role", "candidate") or "candidate"
    if role not in ROLES or role == "baseline":
        raise RabenchError(f"attention {ref!r}: role {role!r} is not one of {', '.join(r for r in ROLES if r != 'baseline')}")
    doc = (inspect.getdoc(cls) or "").strip().splitlines()
    summary = getattr(cls, "summary", "") or (doc[0] if doc else cls.__name__)
    if not SAFE_NAME.match(folder_name(ref)):
        raise RabenchError(f"attention {ref!r}: its name {folder_name(ref)!r} is not usable as a folder name")
    family = "ra" if role in ("ra", "ra-variant") else "standard"
    return AttentionEntry(ref, cls, summary, dict(defaults), family, bool(getattr(cls, "needs_gpu", False)),
                          role == "ra-variant", plugin=True, role=role)


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """A command-line string converted to the default's type; any other value checked against it."""
    if not isinstance(value, str):
        return _checked(name, key, value, default)
    try:
        if isinstance(default, bool):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return _checked(name, key, float(value), default)  # --attn-opt p=nan: refused here, not later
        if isinstance(default, tuple):
            return tuple(int(v) for v in value.split(",") if v.strip() != "")
    except ValueError:
        want = f"a comma-separated list of integers, e.g. {key}=0,3,5" if isinstance(default, tuple) else type(default).__name__
        raise RabenchError(f"attention {name!r} option {key}={value!r}: expected {want}") from None
    return value


def _checked(name: str, key: str, value: Any, default: Any) -> Any:
    """`value` if it has the default's type (an int for an int, a finite number for a float, a list of
    ints for a tuple); a one-line error otherwise (a plan's `window = 6.5` or `hidden = [1]`)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = default is None or isinstance(value, type(default))
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a finite number", tuple: "a list of integers",
                str: "a string"}.get(type(default), type(default).__name__)
        raise RabenchError(f"attention {name!r} option {key} must be {want}, got {value!r}")
    return value
