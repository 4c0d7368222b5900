"""The operation table and the strict request-target parser (pure).

Rules, in the order they are applied:

1. The target is read from the *raw* path bytes (``scope["raw_path"]``), never the
   percent-decoded ``scope["path"]``: a path holding ``%`` anywhere, ``\\``, ``;``, an empty
   segment, or any byte outside the visible ASCII range matches no route.
2. The path is split on ``/`` and matched segment by segment against the route templates.
   Literal segments must be equal; ``{placeholders}`` must match their id pattern in full
   (``thread_…``, ``msg_…``, ``run_…``, ``step_…``, ``file-…``/``assistant-…``). So ``..``,
   ``.``, ``?``, ``#`` and encoded slashes can never be part of an id.
3. No route for the path → 404; the path exists but not for the method → 405.
4. The query is split on ``&`` and each key and value percent-decoded strictly (UTF-8).
   ``api-version`` is required on the Assistants rows (a dated version), must appear once, and
   must be an allowed version that has the operation. Under ``/openai/v1/`` it is optional
   (``v1`` or ``preview``; absent stands for ``v1`` and is forwarded absent, accepted only when
   ``v1`` is allowed). Every other key must be allowed for the operation and version, appear
   once (an array parameter such as ``include[]`` may repeat: every value is validated and
   kept), and pass its validator. Anything else is a 400 naming the parameter.
5. The upstream URL is built only from the configured base, the template's literal segments,
   the validated ids, and the validated query values re-encoded here; the result is checked
   against the template before it is returned.

The table is data (``row.Operation`` rows, ``OPERATIONS``): a successor API is a set of new
rows, not new code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from types import MappingProxyType
from typing import cast
from urllib.parse import quote, unquote, urlsplit

from gateway.errors import BadRequestError, MethodNotAllowedError, NotFoundError
from gateway.operations.apiversions import KNOWN_VERSIONS, OPTIONAL_DEFAULT, ApiVersion
from gateway.operations.assistants import ASSISTANTS
from gateway.operations.files import FILES
from gateway.operations.row import ID_PATTERNS, Operation, QueryParam
from gateway.operations.v1 import V1_ROWS
from gateway.operations.vector_stores import VECTOR_STORES

#: Every operation, one row each.
OPERATIONS: tuple[Operation, ...] = ASSISTANTS + FILES + VECTOR_STORES + V1_ROWS
BY_NAME: Mapping[str, Operation] = {op.name: op for op in OPERATIONS}
if len(BY_NAME) != len(OPERATIONS):  # pragma: no cover - a table edit error
    raise ValueError("operation names must be unique")

_SAFE_PATH = re.compile(r"/[A-Za-z0-9_/-]*")
_MAX_QUERY_BYTES = 2048
#: Matches kept per table (``OperationTable.match``), and the longest target (path and query
#: bytes) kept: at most about 1,000 x 512 bytes of keys.
_KEPT_MATCHES = 1024
_KEPT_TARGET_BYTES = 512


@dataclass(frozen=True, slots=True)
class OperationMatch:
    row: Operation
    version: ApiVersion
    ids: Mapping[str, str]
    #: Validated query parameters, ``api-version`` first (when given: it is optional under
    #: ``/openai/v1/``), in the order the caller sent them.
    query: tuple[tuple[str, str], ...]
    #: Path and query as they will be sent upstream (already encoded).
    upstream_path: str
    upstream_query: str

    @property
    def operation(self) -> str:
        """The operation's name."""
        return self.row.name

    def wants_stream(self, body: Mapping[str, object] | None) -> bool:
        """The request asks for an event stream: ``"stream": true`` in the body of a row that
        streams, or its ``stream_query`` parameter ``true`` (``responses.retrieve``)."""
        row = self.row
        if row.streams and body is not None and body.get("stream") is True:
            return True
        return row.stream_query is not None and (row.stream_query, "true") in self.query

    @property
    def upstream_target(self) -> str:
        """Path and query (no ``?`` when the query is empty: an absent optional
        api-version and no other parameter)."""
        if not self.upstream_query:
            return self.upstream_path
        return f"{self.upstream_path}?{self.upstream_query}"


class OperationTable:
    """Matches request targets against the operation rows for a set of allowed api-versions."""

    def __init__(
        self, allowed_versions: Iterable[str], operations: Iterable[Operation] = OPERATIONS
    ) -> None:
        self.rows = tuple(operations)
        versions = {}
        for name in allowed_versions:
            if name not in KNOWN_VERSIONS:
                raise ValueError(f"unknown api-version {name!r}")
            versions[name] = KNOWN_VERSIONS[name]
        self.versions: Mapping[str, ApiVersion] = versions
        self.operations = frozenset(r.name for r in self.rows)
        self._index = _index(self.rows)
        #: Per row (by identity: the table holds its rows): its placeholders (position, name,
        #: id pattern), what ``_ids`` checks.
        self._placeholders = {
            id(r): tuple(
                (i, s[1:-1], ID_PATTERNS[s[1:-1]])
                for i, s in enumerate(r.segments)
                if s.startswith("{")
            )
            for r in self.rows
        }
        #: Per row: its segments, each with its placeholder's name ('' for a literal).
        self._segments = {
            id(r): tuple((s, s[1:-1] if s.startswith("{") else "") for s in r.segments)
            for r in self.rows
        }
        #: The query parameters of a row in a version, by name (filled as they are asked for;
        #: bounded by rows x allowed versions).
        self._allowed: dict[tuple[int, str], dict[str, QueryParam]] = {}
        #: Recent matches by their exact target, oldest first (``match``).
        self._kept: dict[tuple[str, bytes, bytes], OperationMatch] = {}

    def match(self, method: str, raw_path: bytes, raw_query: bytes) -> OperationMatch:
        """The operation ``method raw_path?raw_query`` asks for, its ids and validated query;
        else the error to answer. A match depends on nothing but the target and this table,
        so the last ``_KEPT_MATCHES`` are kept by their exact bytes (a run polled, messages
        posted to one thread); refusals are worked out every time."""
        key = (method, raw_path, raw_query)
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        found = self._match_target(method, raw_path, raw_query)
        if len(raw_path) + len(raw_query) <= _KEPT_TARGET_BYTES:
            if len(self._kept) >= _KEPT_MATCHES:
                del self._kept[next(iter(self._kept))]
            self._kept[key] = found
        return found

    def _match_target(self, method: str, raw_path: bytes, raw_query: bytes) -> OperationMatch:
        segments = _split_path(raw_path)
        candidates = [
            (r, ids)
            for r in self._candidates(segments)
            if (ids := self._ids(r, segments)) is not None
        ]
        if not candidates:
            raise NotFoundError("Resource not found.", code="route_not_found")
        for route, ids in candidates:
            if route.method == method:
                return self._finish(route, ids, raw_query)
        raise MethodNotAllowedError(
            f"Method {method[:16]!r} is not allowed on this resource.",
            allowed=sorted({r.method for r, _ in candidates}),
        )

    def _candidates(self, segments: list[str]) -> list[Operation]:
        """The rows whose literal segments equal the path's, in table order (a dict lookup
        per template shape, not a scan of every row; ``_ids`` then checks the ids)."""
        found: list[tuple[int, Operation]] = []
        for literals, rows in self._index.get(len(segments), ()):
            found += rows.get(literals(segments), ())
        if len(found) > 1:
            found.sort(key=lambda pair: pair[0])
        return [row for _, row in found]

    def _ids(self, route: Operation, segments: list[str]) -> dict[str, str] | None:
        """The ids of a candidate whose placeholders all hold valid ids, else None: its
        length and literal segments equal the path's already (``_candidates``), so only its
        placeholders are checked."""
        ids: dict[str, str] = {}
        for i, name, pattern in self._placeholders[id(route)]:
            got = segments[i]
            if not pattern.fullmatch(got):
                return None
            ids[name] = got
        return ids

    def _allowed_query(self, route: Operation, version: ApiVersion) -> dict[str, QueryParam]:
        key = (id(route), version.name)
        allowed = self._allowed.get(key)
        if allowed is None:
            allowed = {p.name: p for p in route.query if p.available(version)}
            self._allowed[key] = allowed
        return allowed

    def _finish(self, route: Operation, ids: dict[str, str], raw_query: bytes) -> OperationMatch:
        pairs = _split_query(raw_query)
        version, given = self._version(route, [v for k, v in pairs if k == "api-version"])
        allowed = self._allowed_query(route, version)
        seen: set[str] = set()
        query: list[tuple[str, str]] = [("api-version", version.name)] if given else []
        for key, value in pairs:
            if key == "api-version":
                continue
            param = allowed.get(key)
            if param is None:
                raise BadRequestError(
                    "Unknown or unsupported query parameter.",
                    code="unknown_query_parameter",
                    param=_safe_param(key),
                )
            if key in seen and not param.repeats:
                raise BadRequestError(
                    "Query parameter given more than once.",
                    code="duplicate_query_parameter",
                    param=key,
                )
            if not param.validate(value, version):
                raise BadRequestError(
                    f"Invalid value for query parameter {key}.",
                    code="invalid_query_parameter",
                    param=key,
                )
            seen.add(key)
            query.append((key, value))
        path = "/" + "/".join([ids.get(n, s) if n else s for s, n in self._segments[id(route)]])
        encoded = "&".join([f"{_quoted(k)}={_quoted(v)}" for k, v in query])
        _assert_target(route, ids, path, encoded, query)
        # Kept and shared between requests (``match``): its ids are read-only.
        return OperationMatch(route, version, MappingProxyType(ids), tuple(query), path, encoded)

    def _version(self, route: Operation, given: list[str]) -> tuple[ApiVersion, bool]:
        """The request's api-version, and whether it was given (an optional one may be
        absent: it then stands for its generation's default and is forwarded absent)."""
        if not given:
            default = next(
                (OPTIONAL_DEFAULT[g] for g in sorted(route.generations) if g in OPTIONAL_DEFAULT),
                None,
            )
            if default is None or default not in self.versions:
                raise BadRequestError(
                    "The api-version query parameter is required.",
                    code="missing_api_version",
                    param="api-version",
                )
            return self.versions[default], False
        if len(given) > 1:
            raise BadRequestError(
                "The api-version query parameter must be given once.",
                code="duplicate_query_parameter",
                param="api-version",
            )
        version = self.versions.get(given[0])
        if version is None:
            raise BadRequestError(
                "Unsupported api-version. Supported versions: " + ", ".join(self.versions),
                code="unsupported_api_version",
                param="api-version",
            )
        if version.generation not in route.generations:
            raise BadRequestError(
                f"Operation {route.name} is not available in api-version {version.name}.",
                code="operation_not_in_api_version",
                param="api-version",
            )
        return version, True


def _split_path(raw_path: bytes) -> list[str]:
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise NotFoundError("Resource not found.", code="route_not_found") from None
    if not _SAFE_PATH.fullmatch(path):
        raise NotFoundError("Resource not found.", code="route_not_found")
    return path[1:].split("/")


#: A template shape's literal segments picked out of a path's (``_literals``).
_Literals = Callable[[list[str]], tuple[str, ...]]
#: Per path length, per template shape (the literal segments it picks): the rows by their
#: literal segments, each with its place in the table.
_Index = dict[int, list[tuple[_Literals, dict[tuple[str, ...], list[tuple[int, Operation]]]]]]


def _literals(positions: tuple[int, ...]) -> _Literals:
    """The segments at ``positions``, as a tuple (``itemgetter``: one C call)."""
    if len(positions) > 1:
        return cast(_Literals, itemgetter(*positions))
    return lambda segments: tuple([segments[i] for i in positions])


def _index(rows: Iterable[Operation]) -> _Index:
    shapes: dict[tuple[int, tuple[int, ...]], dict[tuple[str, ...], list[tuple[int, Operation]]]]
    shapes = {}
    for place, row in enumerate(rows):
        literals = tuple(i for i, s in enumerate(row.segments) if not s.startswith("{"))
        by_literals = shapes.setdefault((len(row.segments), literals), {})
        by_literals.setdefault(tuple(row.segments[i] for i in literals), []).append((place, row))
    index: _Index = {}
    for (length, literals), by_literals in shapes.items():
        index.setdefault(length, []).append((_literals(literals), by_literals))
    return index


def _split_query(raw_query: bytes) -> list[tuple[str, str]]:
    if len(raw_query) > _MAX_QUERY_BYTES:
        raise BadRequestError("Query string too long.", code="invalid_query_string")
    if not raw_query:
        return []
    try:
        text = raw_query.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequestError("Malformed query string.", code="invalid_query_string") from None
    pairs = []
    for part in text.split("&"):
        key, sep, value = part.partition("=")
        if not sep or not key or "+" in part:
            raise BadRequestError("Malformed query string.", code="invalid_query_string")
        try:
            pairs.append((unquote(key, errors="strict"), unquote(value, errors="strict")))
        except UnicodeDecodeError:
            raise BadRequestError("Malformed query string.", code="invalid_query_string") from None
    return pairs


#: What ``quote(text, safe="")`` leaves as it is: a text of these alone is its own quoting.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _quoted(text: str) -> str:
    return text if _UNRESERVED.fullmatch(text) else quote(text, safe="")


def _safe_param(key: str) -> str | None:
    """Echo a parameter name back only when it is short and plain."""
    return key if re.fullmatch(r"[A-Za-z0-9_.\[\]-]{1,40}", key) else None


def _assert_target(
    route: Operation, ids: Mapping[str, str], path: str, query: str, pairs: list[tuple[str, str]]
) -> None:
    """Backstop: the built target must re-parse to exactly the template and validated query."""
    got_path, got_query, fragment = _split_target(path, query)
    expected = route.template.format(**ids)
    decoded = [tuple(p.split("=", 1)) for p in got_query.split("&")] if got_query else []
    if got_path != expected or fragment or [(unquote(k), unquote(v)) for k, v in decoded] != pairs:
        raise AssertionError(f"upstream target mismatch for {route.name}")


#: What ``urlsplit`` reads specially after the authority: the query and fragment delimiters
#: and the bytes it removes (tab, CR, LF).
_URL_SPECIAL = re.compile(r"[?#\t\r\n]")


def _split_target(path: str, query: str) -> tuple[str, str, str]:
    """Path, query and fragment of ``https://upstream.invalid{path}?{query}`` as ``urlsplit``
    reads them. A ``/``-rooted path and a query holding none of ``_URL_SPECIAL`` come back
    unchanged (an empty fragment): then ``urlsplit`` is not run."""
    if path.startswith("/") and not _URL_SPECIAL.search(path) and not _URL_SPECIAL.search(query):
        return path, query, ""
    parts = urlsplit(f"https://upstream.invalid{path}?{query}")
    return parts.path, parts.query, parts.fragment
