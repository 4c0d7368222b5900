"""Settings declared once: dataclass fields that say how to read, check and document themselves
(pure; standard library only).

A section is a frozen dataclass whose fields are declared with :func:`setting`::

    @dataclass(frozen=True, slots=True, kw_only=True)
    class ServerConfig:
        port: int = setting(8080, "proxy listener port", check=between(1, 65535),
                            env="GATEWAY_PORT")

From that one declaration come

* **reading** (``gateway.config.reader.read``), by the field's type: ``bool``, ``int``,
  ``float`` (an integer is accepted), ``str``, ``Literal[...]``, ``X | None``,
  ``tuple[str, ...]`` / ``frozenset[str]`` (lists of non-empty strings), a section (a table),
  ``tuple[S, ...]`` (an array of tables) and ``Mapping[str, S]`` (a table of named tables).
  Wrong types, failed checks, missing required keys and unknown keys are all collected with
  their paths (``profiles.batch.rate_limit.write.burst: must be > 0``); nothing stops at the
  first problem.
* **documentation** (:func:`rows`): one row per key, from which the README's configuration
  table is generated, and **environment overrides** (:func:`env_overrides`).

A field whose attribute is a core object rather than a section names the section it is read
as (``shape=``); that section's ``build()`` makes the object. ``inline=True`` reads a section
from the parent's own table (flat TOML, nested object). A section may add cross-field checks
in ``__check__(self, path) -> Iterable[str]`` (problem lines); a line about a path that
already has a problem is dropped (the key's own problem says it first). ``__refused__`` maps
keys that must never be written (secrets) to the reason. A missing key takes its default,
except a plain section, which is read as an empty table so its own checks still run.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass
from typing import Any, TypeVar, cast, get_args, get_origin

T = TypeVar("T")
Check = Callable[[Any], str | None]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a key that must be written.
REQUIRED: Any = _Required()


def problem(path: str, message: str) -> str:
    return f"{path or '(root)'}: {message}"


def at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def setting(
    default: Any = REQUIRED,
    doc: str = "",
    *,
    check: Check | None = None,
    each: Check | None = None,
    allowed: Iterable[str] | None = None,
    names: Check | None = None,
    env: str | None = None,
    shown: str | None = None,
    key: str | None = None,
    shape: type | None = None,
    inline: bool = False,
    missing: str = "is required",
    placeholder: str = "<name>",
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare one setting.

    ``check(value)`` returns a problem or None (run on a value read from the file); ``each``
    does so for every item of a string list (reported at ``key[i]``), ``allowed`` restricts
    those items and ``names`` checks the names of a table of tables (``key.<name>``).
    ``env`` names the environment variable that overrides the key; ``shown`` replaces the
    default in the docs; ``key`` is the TOML key when it differs from the field name;
    ``missing`` is the problem of a required key left out; ``placeholder`` stands for the
    names of a table of tables in the docs (``per_caller.<read|write>``).
    """
    meta = {
        "doc": doc,
        "check": check,
        "each": each,
        "allowed": frozenset(allowed) if allowed is not None else None,
        "names": names,
        "env": env,
        "shown": shown,
        "key": key,
        "shape": shape,
        "inline": inline,
        "missing": missing,
        "placeholder": placeholder,
        "setting": True,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if inline:
        return dataclasses.field(metadata=meta)
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def table_name() -> Any:
    """A field holding the name of this table in its parent table of tables (not a key)."""
    return dataclasses.field(default="", metadata={"table_name": True})


# ------------------------------------------------------------------ the declarations


def is_section(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def toml_key(f: Field[Any]) -> str:
    return str(f.metadata.get("key") or f.name)


def fields(cls: type) -> tuple[Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cast(Any, cls)) if f.init)


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def refused_keys(cls: type) -> Mapping[str, str]:
    out = dict(getattr(cls, "__refused__", {}))
    for f in fields(cls):
        if f.metadata.get("inline"):
            out.update(refused_keys(f.metadata["shape"] or hints(cls)[f.name]))
    return out


@functools.cache
def keys(cls: type) -> frozenset[str]:
    """The TOML keys of a section's own table (inline sections' keys included)."""
    out: set[str] = set()
    for f in fields(cls):
        if f.metadata.get("table_name"):
            continue
        if f.metadata.get("inline"):
            out |= keys(f.metadata["shape"] or hints(cls)[f.name])
        else:
            out.add(toml_key(f))
    return frozenset(out)


def require_declared(cls: type, f: Field[Any]) -> None:
    if not f.metadata.get("setting"):
        raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")


def missing_message(meta: Mapping[str, Any]) -> str:
    message = str(meta["missing"])
    if meta["env"] and message == "is required":
        return f"is required (here or in {meta['env']})"
    return message


def required(f: Field[Any]) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def optional_of(kind: Any) -> Any:
    options = [a for a in get_args(kind) if a is not type(None)]
    if len(options) != 1:
        raise TypeError(f"only X | None unions can be read, not {kind!r}")
    return options[0]


def is_table(kind: Any, meta: Mapping[str, Any]) -> bool:
    """A lone table: a section, or a core object read through its ``shape``."""
    return get_origin(kind) is None and (meta["shape"] is not None or is_section(kind))


# ------------------------------------------------------------------ documentation


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    default: str
    doc: str


def rows(cls: type, prefix: str = "") -> Iterator[Row]:
    """One row per key (sections flattened, in declaration order)."""
    types_of = hints(cls)
    for f in fields(cls):
        meta, kind = f.metadata, types_of[f.name]
        if meta.get("table_name"):
            continue
        require_declared(cls, f)
        if meta["inline"]:
            yield from rows(meta["shape"] or kind, prefix)
            continue
        key = at(prefix, toml_key(f))
        nested = _nested(kind, meta)
        if nested is not None and not meta["doc"]:
            yield from rows(nested[0], key + nested[1])
            continue
        if not meta["doc"]:
            raise TypeError(f"{cls.__name__}.{f.name} has no doc")
        yield Row(key, shown(f), str(meta["doc"]))
        if nested is not None:
            yield from rows(nested[0], key + nested[1])


def _nested(kind: Any, meta: Mapping[str, Any]) -> tuple[type, str] | None:
    """The section read at a key and the suffix its keys take (``[]``, ``.<name>``)."""
    shape: type | None = meta["shape"]
    origin, args = get_origin(kind), get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return _nested(optional_of(kind), meta)
    if origin is tuple and args[0] is not str:
        return (shape or args[0], "[]")
    if origin in (dict, Mapping):
        return (shape or args[1], "." + meta["placeholder"])
    if shape is not None or is_section(kind):
        return (shape or kind, "")
    return None


def shown(f: Field[Any]) -> str:
    """The default as the docs show it: a TOML value, ``required`` or the declared text."""
    if f.metadata.get("shown") is not None:
        return str(f.metadata["shown"])
    if required(f):
        return "required"
    value = f.default if f.default is not MISSING else cast(Any, f.default_factory)()
    if value is None:
        return "—"
    return f"`{toml_value(value)}`"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, tuple | frozenset | list):
        items = sorted(value) if isinstance(value, frozenset) else value
        return "[" + ", ".join(toml_value(v) for v in items) + "]"
    if isinstance(value, Mapping) and not value:
        return "{}"
    raise TypeError(f"no TOML form for {value!r}")


def env_overrides(
    cls: type, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """``(variable, key path, field type)`` of every setting that names an env variable (in
    sections and inline sections; not inside arrays or named tables)."""
    types_of = hints(cls)
    for f in fields(cls):
        meta, kind = f.metadata, types_of[f.name]
        if meta.get("table_name"):
            continue
        if meta["inline"]:
            yield from env_overrides(meta["shape"] or kind, prefix)
        elif get_origin(kind) is None and (meta["shape"] or is_section(kind)):
            yield from env_overrides(meta["shape"] or kind, (*prefix, toml_key(f)))
        elif meta["env"]:
            yield str(meta["env"]), (*prefix, toml_key(f)), kind


# ------------------------------------------------------------------ checks


def positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def between(low: float, high: float) -> Check:
    return lambda v: None if low <= v <= high else f"must be between {low:g} and {high:g}"


def non_empty(message: str) -> Check:
    return lambda v: None if v else message
