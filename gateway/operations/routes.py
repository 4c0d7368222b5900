"""The Assistants route allow-list and the strict request-target parser (pure).

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
   ``api-version`` is required, must appear once, and must be an allowed version that has the
   operation. Every other key must be allowed for the operation and version, appear once, and
   pass its validator. Anything else is a 400 naming the parameter.
5. The upstream URL is built only from the configured base, the template's literal segments,
   the validated ids, and the validated query values re-encoded here; the result is checked
   against the template before it is returned.

The table is data: a successor API is a set of new ``Route`` rows, not new code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from gateway.errors import BadRequestError, MethodNotAllowedError, NotFoundError
from gateway.operations.apiversions import KNOWN_VERSIONS, ApiVersion, Generation

OpClass = Literal["read", "write"]

ID_PATTERNS: dict[str, re.Pattern[str]] = {
    "thread_id": re.compile(r"thread_[A-Za-z0-9]{1,64}"),
    "message_id": re.compile(r"msg_[A-Za-z0-9]{1,64}"),
    "run_id": re.compile(r"run_[A-Za-z0-9]{1,64}"),
    "step_id": re.compile(r"step_[A-Za-z0-9]{1,64}"),
    "file_id": re.compile(r"(?:file|assistant)-[A-Za-z0-9_-]{1,64}"),
}

INCLUDE_VALUES = frozenset({"step_details.tool_calls[*].file_search.results[*].content"})
_LIMIT = re.compile(r"[1-9][0-9]{0,2}")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_/-]*")
_MAX_QUERY_BYTES = 2048


@dataclass(frozen=True, slots=True)
class QueryParam:
    name: str
    validate: Callable[[str, ApiVersion], bool]
    #: The parameter exists only where this returns True for the request's api-version.
    available: Callable[[ApiVersion], bool] = lambda v: True


def _limit(value: str, _: ApiVersion) -> bool:
    return bool(_LIMIT.fullmatch(value)) and 1 <= int(value) <= 100


def _order(value: str, _: ApiVersion) -> bool:
    return value in ("asc", "desc")


def _id_of(kind: str) -> Callable[[str, ApiVersion], bool]:
    pattern = ID_PATTERNS[kind]
    return lambda value, _: bool(pattern.fullmatch(value))


def _include(value: str, _: ApiVersion) -> bool:
    return value in INCLUDE_VALUES


def _pager(item_id: str) -> tuple[QueryParam, ...]:
    return (
        QueryParam("limit", _limit),
        QueryParam("order", _order),
        QueryParam("after", _id_of(item_id)),
        QueryParam("before", _id_of(item_id)),
    )


_V2_ONLY: Callable[[ApiVersion], bool] = lambda v: v.generation == "v2"  # noqa: E731


@dataclass(frozen=True, slots=True)
class Route:
    operation: str
    method: str
    template: str
    generations: frozenset[Generation]
    op_class: OpClass
    query: tuple[QueryParam, ...] = ()
    has_body: bool = False
    #: May answer with ``text/event-stream`` when the body says ``"stream": true``.
    streams: bool = False
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.template.strip("/").split("/")))


V1V2: frozenset[Generation] = frozenset({"v1", "v2"})
V1: frozenset[Generation] = frozenset({"v1"})
V2: frozenset[Generation] = frozenset({"v2"})
_T = "/openai/threads/{thread_id}"
_M = _T + "/messages/{message_id}"
_R = _T + "/runs/{run_id}"
_INCLUDE_STEPS = QueryParam("include[]", _include, lambda v: v.run_step_include)

ROUTES: tuple[Route, ...] = (
    Route("threads.create", "POST", "/openai/threads", V1V2, "write", has_body=True),
    Route("threads.retrieve", "GET", _T, V1V2, "read"),
    Route("threads.modify", "POST", _T, V1V2, "write", has_body=True),
    Route("threads.delete", "DELETE", _T, V1V2, "write"),
    Route("messages.create", "POST", _T + "/messages", V1V2, "write", has_body=True),
    Route(
        "messages.list",
        "GET",
        _T + "/messages",
        V1V2,
        "read",
        query=(*_pager("message_id"), QueryParam("run_id", _id_of("run_id"), _V2_ONLY)),
    ),
    Route("messages.retrieve", "GET", _M, V1V2, "read"),
    Route("messages.modify", "POST", _M, V1V2, "write", has_body=True),
    Route("messages.delete", "DELETE", _M, V2, "write"),
    Route("messages.files.list", "GET", _M + "/files", V1, "read", query=_pager("file_id")),
    Route("messages.files.retrieve", "GET", _M + "/files/{file_id}", V1, "read"),
    Route(
        "threads.create_and_run",
        "POST",
        "/openai/threads/runs",
        V2,
        "write",
        has_body=True,
        streams=True,
    ),
    Route(
        "runs.create",
        "POST",
        _T + "/runs",
        V2,
        "write",
        has_body=True,
        streams=True,
        query=(QueryParam("include[]", _include, lambda v: v.create_run_include),),
    ),
    Route("runs.list", "GET", _T + "/runs", V2, "read", query=_pager("run_id")),
    Route("runs.retrieve", "GET", _R, V2, "read"),
    Route("runs.modify", "POST", _R, V2, "write", has_body=True),
    Route(
        "runs.submit_tool_outputs",
        "POST",
        _R + "/submit_tool_outputs",
        V2,
        "write",
        has_body=True,
        streams=True,
    ),
    Route("runs.cancel", "POST", _R + "/cancel", V2, "write"),
    Route(
        "runs.steps.list",
        "GET",
        _R + "/steps",
        V2,
        "read",
        query=(*_pager("step_id"), _INCLUDE_STEPS),
    ),
    Route(
        "runs.steps.retrieve", "GET", _R + "/steps/{step_id}", V2, "read", query=(_INCLUDE_STEPS,)
    ),
)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    version: ApiVersion
    ids: Mapping[str, str]
    #: Validated query parameters, ``api-version`` first, in the order the caller sent them.
    query: tuple[tuple[str, str], ...]
    #: Path and query as they will be sent upstream (already encoded).
    upstream_path: str
    upstream_query: str

    @property
    def operation(self) -> str:
        return self.route.operation

    @property
    def upstream_target(self) -> str:
        return f"{self.upstream_path}?{self.upstream_query}"


class RouteTable:
    """Matches request targets against a route table for a set of allowed api-versions."""

    def __init__(self, routes: Iterable[Route], allowed_versions: Iterable[str]) -> None:
        self.routes = tuple(routes)
        versions = {}
        for name in allowed_versions:
            if name not in KNOWN_VERSIONS:
                raise ValueError(f"unknown api-version {name!r}")
            versions[name] = KNOWN_VERSIONS[name]
        self.versions: Mapping[str, ApiVersion] = versions
        self.operations = frozenset(r.operation for r in self.routes)

    def match(self, method: str, raw_path: bytes, raw_query: bytes) -> RouteMatch:
        segments = _split_path(raw_path)
        candidates = [(r, ids) for r in self.routes if (ids := _match(r, segments)) is not None]
        if not candidates:
            raise NotFoundError("Resource not found.", code="route_not_found")
        for route, ids in candidates:
            if route.method == method:
                return self._finish(route, ids, raw_query)
        raise MethodNotAllowedError(
            f"Method {method[:16]!r} is not allowed on this resource.",
            allowed=sorted({r.method for r, _ in candidates}),
        )

    def _finish(self, route: Route, ids: dict[str, str], raw_query: bytes) -> RouteMatch:
        pairs = _split_query(raw_query)
        versions = [v for k, v in pairs if k == "api-version"]
        if not versions:
            raise BadRequestError(
                "The api-version query parameter is required.",
                code="missing_api_version",
                param="api-version",
            )
        if len(versions) > 1:
            raise BadRequestError(
                "The api-version query parameter must be given once.",
                code="duplicate_query_parameter",
                param="api-version",
            )
        version = self.versions.get(versions[0])
        if version is None:
            raise BadRequestError(
                "Unsupported api-version. Supported versions: " + ", ".join(self.versions),
                code="unsupported_api_version",
                param="api-version",
            )
        if version.generation not in route.generations:
            raise BadRequestError(
                f"Operation {route.operation} is not available in api-version {version.name}.",
                code="operation_not_in_api_version",
                param="api-version",
            )
        allowed = {p.name: p for p in route.query if p.available(version)}
        seen: set[str] = set()
        query: list[tuple[str, str]] = [("api-version", version.name)]
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
            if key in seen:
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
        path = "/" + "/".join(
            ids.get(s[1:-1], s) if s.startswith("{") else s for s in route.segments
        )
        encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
        _assert_target(route, ids, path, encoded, query)
        return RouteMatch(route, version, ids, tuple(query), path, encoded)


def _split_path(raw_path: bytes) -> list[str]:
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise NotFoundError("Resource not found.", code="route_not_found") from None
    if not _SAFE_PATH.fullmatch(path):
        raise NotFoundError("Resource not found.", code="route_not_found")
    return path[1:].split("/")


def _match(route: Route, segments: list[str]) -> dict[str, str] | None:
    if len(segments) != len(route.segments):
        return None
    ids: dict[str, str] = {}
    for want, got in zip(route.segments, segments, strict=True):
        if want.startswith("{"):
            name = want[1:-1]
            if not ID_PATTERNS[name].fullmatch(got):
                return None
            ids[name] = got
        elif want != got:
            return None
    return ids


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


def _safe_param(key: str) -> str | None:
    """Echo a parameter name back only when it is short and plain."""
    return key if re.fullmatch(r"[A-Za-z0-9_.\[\]-]{1,40}", key) else None


def _assert_target(
    route: Route, ids: Mapping[str, str], path: str, query: str, pairs: list[tuple[str, str]]
) -> None:
    """Backstop: the built target must re-parse to exactly the template and validated query."""
    parts = urlsplit(f"https://upstream.invalid{path}?{query}")
    expected = route.template.format(**ids)
    decoded = [tuple(p.split("=", 1)) for p in parts.query.split("&")]
    if (
        parts.path != expected
        or parts.fragment
        or [(unquote(k), unquote(v)) for k, v in decoded] != pairs
    ):
        raise AssertionError(f"upstream target mismatch for {route.operation}")
