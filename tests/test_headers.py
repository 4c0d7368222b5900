"""Header rewriting (pure): what goes to Azure and what comes back."""

from __future__ import annotations

import os
import uuid

import pytest

from gateway.upstream.headers import (
    downstream_response_headers,
    new_request_id,
    request_id_from,
    upstream_request_headers,
)


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n for n, _ in headers]


def test_upstream_headers_are_allow_listed_and_carry_the_key() -> None:
    caller = [
        (b"Authorization", b"Bearer caller.jwt.token"),
        (b"API-Key", b"caller-key"),
        (b"api-key", b"caller-key-2"),
        (b"Cookie", b"a=b"),
        (b"Host", b"evil"),
        (b"X-Forwarded-For", b"1.2.3.4"),
        (b"Content-Type", b"application/json"),
        (b"Accept", b"application/json"),
        (b"OpenAI-Beta", b"assistants=v2"),
        (b"X-Stainless-Lang", b"python"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"10"),
        (b"X-HTTP-Method-Override", b"DELETE"),
    ]
    out = upstream_request_headers(
        caller, credential=(b"api-key", b"real-key"), request_id="rid-1", has_body=True
    )
    assert dict(out)[b"api-key"] == b"real-key"
    assert names(out).count(b"api-key") == 1
    assert names(out) == [
        b"content-type",
        b"accept",
        b"openai-beta",
        b"x-stainless-lang",
        b"accept-encoding",
        b"api-key",
        b"x-ms-client-request-id",
    ]
    assert dict(out)[b"accept-encoding"] == b"identity"
    assert dict(out)[b"x-ms-client-request-id"] == b"rid-1"


@pytest.mark.parametrize("value", [b"gzip", b"gzip, deflate, br", b"identity", b"*"])
def test_the_gateway_decides_the_upstream_encoding(value: bytes) -> None:
    out = upstream_request_headers(
        [(b"Accept-Encoding", value), (b"accept-encoding", value)],
        credential=(b"api-key", b"k"),
        request_id="r",
        has_body=False,
    )
    assert [v for n, v in out if n == b"accept-encoding"] == [b"identity"]


def test_connection_nominated_headers_are_dropped_but_ours_survive() -> None:
    caller = [
        (b"Connection", b"close, X-Stainless-Lang, api-key, Accept"),
        (b"X-Stainless-Lang", b"python"),
        (b"Accept", b"*/*"),
    ]
    out = upstream_request_headers(
        caller, credential=(b"api-key", b"k"), request_id="r", has_body=False
    )
    assert b"x-stainless-lang" not in names(out)
    assert b"accept" not in names(out)
    assert dict(out)[b"api-key"] == b"k"


@pytest.mark.parametrize(
    ("caller", "copied"),
    [
        # A nominated header is dropped wherever Connection comes, every copy of it.
        (
            [(b"accept", b"a/1"), (b"accept", b"a/2"), (b"connection", b"accept")],
            [(b"content-type", b"application/json")],
        ),
        # A nominated Content-Type: the gateway's own takes its place.
        (
            [(b"Content-Type", b"application/json; x=1"), (b"Connection", b"content-type")],
            [(b"content-type", b"application/json")],
        ),
        # The first copy whose value is safe; the others are dropped.
        (
            [(b"accept", b"a\x00"), (b"Accept", b"a/2"), (b"accept", b"a/3")],
            [(b"accept", b"a/2"), (b"content-type", b"application/json")],
        ),
        (
            [
                (b"connection", b"keep-alive"),
                (b"connection", b"X-Stainless-Lang , ,"),
                (b"x-stainless-lang", b"python"),
                (b"openai-beta", b"assistants=v2"),
                (b"content-type", b"application/json"),
            ],
            [(b"openai-beta", b"assistants=v2"), (b"content-type", b"application/json")],
        ),
    ],
)
def test_copied_caller_headers(
    caller: list[tuple[bytes, bytes]], copied: list[tuple[bytes, bytes]]
) -> None:
    out = upstream_request_headers(
        caller, credential=(b"api-key", b"k"), request_id="r", has_body=True
    )
    assert out == [
        *copied,
        (b"accept-encoding", b"identity"),
        (b"api-key", b"k"),
        (b"x-ms-client-request-id", b"r"),
    ]


@pytest.mark.parametrize("value", [b"a\r\nb", b"a\x00b", b"caf\xc3\xa9", b"\x7f"])
def test_unsafe_values_are_dropped(value: bytes) -> None:
    out = upstream_request_headers(
        [(b"openai-beta", value)], credential=(b"api-key", b"k"), request_id="r", has_body=False
    )
    assert b"openai-beta" not in names(out)


def test_content_type_only_with_a_body() -> None:
    caller = [(b"content-type", b"application/json")]
    assert b"content-type" not in names(
        upstream_request_headers(
            caller, credential=(b"api-key", b"k"), request_id="r", has_body=False
        )
    )
    assert (
        dict(
            upstream_request_headers(
                [], credential=(b"api-key", b"k"), request_id="r", has_body=True
            )
        )[b"content-type"]
        == b"application/json"
    )


def test_response_headers() -> None:
    azure = [
        (b"Content-Type", b"application/json"),
        (b"Set-Cookie", b"ARRAffinity=1"),
        (b"Server", b"Microsoft"),
        (b"x-request-id", b"az-1"),
        (b"apim-request-id", b"ap-1"),
        (b"x-ratelimit-remaining-requests", b"9"),
        (b"retry-after-ms", b"20"),
        (b"openai-poll-after-ms", b"1000"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"keep-alive, x-ms-region"),
        (b"x-ms-region", b"eastus"),
        (b"Strict-Transport-Security", b"max-age=1"),
        (b"x-internal-host", b"10.0.0.5"),
    ]
    out = downstream_response_headers(azure, request_id="gw-1")
    assert out == [
        (b"content-type", b"application/json"),
        (b"x-upstream-request-id", b"az-1"),
        (b"apim-request-id", b"ap-1"),
        (b"x-ratelimit-remaining-requests", b"9"),
        (b"retry-after-ms", b"20"),
        (b"openai-poll-after-ms", b"1000"),
        (b"x-request-id", b"gw-1"),
    ]


@pytest.mark.parametrize(
    ("upstream", "relayed"),
    [
        (
            [
                (b"Connection", b"apim-request-id, X-Request-Id"),
                (b"apim-request-id", b"ap-1"),
                (b"x-request-id", b"az-1"),
                (b"x-ms-region", b"eu"),
            ],
            [(b"x-ms-region", b"eu")],
        ),
        # Nominating x-upstream-request-id names nothing relayed: Azure's x-request-id stays.
        (
            [
                (b"x-request-id", b"az-1"),
                (b"x-upstream-request-id", b"no"),
                (b"connection", b"x-upstream-request-id, keep-alive"),
            ],
            [(b"x-upstream-request-id", b"az-1")],
        ),
        (
            [
                (b"x-ratelimit-a", b"1"),
                (b"x-ratelimit-b", b"2"),
                (b"x-ratelimit-a", b"3"),
                (b"connection", b"X-RateLimit-A"),
                (b"connection", b"close"),
            ],
            [(b"x-ratelimit-b", b"2")],
        ),
        (
            [(b"content-type", b"text/plain"), (b"content-type", b"a\x01"), (b"retry-after", b"1")],
            [(b"content-type", b"text/plain"), (b"retry-after", b"1")],
        ),
    ],
)
def test_relayed_response_headers(
    upstream: list[tuple[bytes, bytes]], relayed: list[tuple[bytes, bytes]]
) -> None:
    out = downstream_response_headers(iter(upstream), request_id="gw-1")
    assert out == [*relayed, (b"x-request-id", b"gw-1")]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"x-request-id", b"abc-123")], "abc-123"),
        ([(b"X-MS-Client-Request-Id", b"ms-1")], "ms-1"),
        ([(b"x-request-id", b"bad id"), (b"x-ms-client-request-id", b"ok-2")], "ok-2"),
        # The caller's x-request-id wins wherever it is; the first well-formed one of each.
        ([(b"x-ms-client-request-id", b"ms-1"), (b"X-Request-Id", b"rid-1")], "rid-1"),
        ([(b"x-request-id", b"bad id"), (b"x-request-id", b"rid-2")], "rid-2"),
        (
            [
                (b"x-ms-client-request-id", b"bad id"),
                (b"x-ms-client-request-id", b"ms-2"),
                (b"x-ms-client-request-id", b"ms-3"),
            ],
            "ms-2",
        ),
    ],
)
def test_request_id(headers: list[tuple[bytes, bytes]], expected: str) -> None:
    assert request_id_from(headers) == expected


@pytest.mark.parametrize("value", [b"", b"x" * 129, b"a\nb", b"\xff", b"a b"])
def test_request_id_is_generated_for_bad_values(value: bytes) -> None:
    generated = request_id_from([(b"x-request-id", value)])
    assert len(generated) == 36
    assert generated != value.decode("latin-1")


def test_a_new_request_id_is_a_random_uuid4() -> None:
    ids = [new_request_id() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    for made in ids[:200]:
        parsed = uuid.UUID(made)
        assert (str(parsed), parsed.version, parsed.variant) == (made, 4, uuid.RFC_4122)
    # Every hex digit but the version's varies (the variant digit over 8, 9, a, b).
    for i, char in enumerate(ids[0]):
        seen = {made[i] for made in ids}
        if char == "-" or i == 14:
            assert len(seen) == 1
        else:
            assert len(seen) == (4 if i == 19 else 16)


def test_a_forked_child_never_hands_out_its_parents_ids() -> None:
    """A forked child's next id is not the one the parent hands out next (nothing drawn
    ahead of time is inherited)."""
    new_request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id to the parent, then out without cleanup
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert len(child) == 36
    assert child != new_request_id()
