"""Thread-ownership rules (pure)."""

from __future__ import annotations

import pytest

from gateway.errors import NotFoundError
from gateway.ownership import (
    check_owner,
    owner_key,
    tenant_digest,
    thread_id_from_json,
    thread_id_from_sse,
)


def test_owner_check() -> None:
    check_owner(tenant_digest("team-a"), "team-a", "deny")
    check_owner(None, "team-a", "allow")
    for owner, unknown in ((tenant_digest("team-b"), "allow"), (None, "deny")):
        with pytest.raises(NotFoundError) as err:
            check_owner(owner, "team-a", unknown)  # type: ignore[arg-type]
        assert err.value.status == 404
        assert err.value.code == "thread_not_found"


def test_keys_and_digests_hide_tenants() -> None:
    assert owner_key("thread_abc") == "gw:own:{thread_abc}"
    assert "team-a" not in tenant_digest("team-a")
    assert tenant_digest("team-a") != tenant_digest("team-b")


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        ("threads.create", b'{"id":"thread_abc","object":"thread"}', "thread_abc"),
        ("threads.create_and_run", b'{"id":"run_1","thread_id":"thread_xyz"}', "thread_xyz"),
        ("threads.create", b'{"id":"thread_../x"}', None),
        ("threads.create", b'{"id":7}', None),
        ("threads.create", b"[]", None),
        ("threads.create", b"not json", None),
    ],
)
def test_thread_id_from_json(operation: str, body: bytes, expected: str | None) -> None:
    assert thread_id_from_json(operation, body) == expected


@pytest.mark.parametrize(
    ("buffer", "expected"),
    [
        (b"event: thread.created\ndata: {\"id\":\"thread_a1\"}", (False, None)),
        (b"event: thread.created\ndata: {\"id\":\"thread_a1\"}\n\nevent: x", (True, "thread_a1")),
        (b"event: thread.created\r\ndata: {\"id\":\"thread_a1\"}\r\n\r\n", (True, "thread_a1")),
        (b"event: thread.run.created\ndata: {\"id\":\"run_1\"}\n\n", (True, None)),
        (b"event: thread.created\ndata: {oops\n\n", (True, None)),
        (b"event: thread.created\ndata: {\"id\":\"thread_a/b\"}\n\n", (True, None)),
    ],
)
def test_thread_id_from_sse(buffer: bytes, expected: tuple[bool, str | None]) -> None:
    assert thread_id_from_sse(buffer) == expected
