"""Admission control: the pure gate, and shedding before any token or body work end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.asgi import Message, Receive, Scope, Send
from gateway.context import CONTEXT, RequestContext
from gateway.errors import GatewayError
from gateway.server.admission import NO_ADMISSION, Admission, overloaded
from gateway.server.middleware import AdmissionMiddleware
from tests.rawhttp import raw_request
from tests.servers import private_redis
from tests.stack import V2, running_stack

Q = {"api-version": V2}


def test_the_gate_counts_sheds_and_gives_back() -> None:
    gate = Admission(max_pending=2)
    first, second = gate.enter(), gate.enter()
    assert (first.shed, second.shed, gate.pending) == (None, None, 2)
    shed = gate.enter()
    assert shed.shed == "pending"
    assert gate.shed == {"pending": 1}
    shed.release()  # a shed ticket holds nothing
    assert gate.pending == 2
    first.release()
    first.release()  # idempotent
    assert gate.pending == 1
    assert gate.enter().shed is None
    NO_ADMISSION.release()
    with pytest.raises(ValueError, match="max_pending"):
        Admission(max_pending=0)


def test_the_shed_answer() -> None:
    error = overloaded()
    assert (error.status, error.code, error.type) == (503, "server_overloaded", "server_error")
    assert error.headers == {"Retry-After": "1", "x-should-retry": "true"}


def test_a_full_gate_answers_503_before_the_token_or_the_body_is_looked_at(tmp_path: Path) -> None:
    """Two requests wait on a stopped Redis (their rate-limit decision), which fills
    ``max_pending_requests = 2``: a third gets 503 at once, even with a token that would get
    401 and a body that is never sent. Once they are past admission, the gate is free."""
    overrides = {
        "server": {"max_pending_requests": 2},
        "rate_limit": {"budget_s": 1.5, "fail_mode": "closed"},
        "profiles": {
            "writer": {"rate_limit": {"per_caller": {"read": {"requests": 100, "per_seconds": 1}}}}
        },
        "redis": {"socket_timeout_s": 1.5, "connect_timeout_s": 1.5},
    }
    with (
        private_redis() as server,
        running_stack(tmp_path, redis_url=server.url, overrides=overrides) as stack,
    ):
        assert server.proc is not None
        client = httpx.Client(base_url=stack.url, timeout=10)
        waiting = [f"/openai/threads/thread_wait{i}" for i in range(2)]
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                held = [
                    pool.submit(
                        httpx.get, f"{stack.url}{path}", params=Q, headers=stack.auth(), timeout=10
                    )
                    for path in waiting
                ]
                deadline = time.monotonic() + 5
                while stack.gateway.admission is not None and stack.gateway.admission.pending < 2:
                    assert time.monotonic() < deadline, "the requests never got in"
                    time.sleep(0.01)
                started = time.monotonic()
                # A body announced and never sent: nobody waits for it.
                shed = raw_request(
                    stack.url,
                    (
                        f"POST /openai/threads?api-version={V2} HTTP/1.1\r\nHost: gw\r\n"
                        "Authorization: Bearer not-a-token\r\nContent-Type: application/json\r\n"
                        "Content-Length: 100000\r\n\r\n"
                    ).encode(),
                )
                assert time.monotonic() - started < 1.0
                assert shed.status == 503, shed.body
                assert shed.json()["error"]["code"] == "server_overloaded"
                assert shed.header("retry-after") == "1"
                assert [f.result(timeout=10).status_code for f in held] == [503, 503]
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        # The gate is free again: the bad token gets its 401.
        assert (
            client.get(
                "/openai/threads/thread_x",
                params=Q,
                headers={"Authorization": "Bearer not-a-token"},
            ).status_code
            == 401
        )
        assert stack.gateway.metrics is not None
        registry = stack.gateway.metrics.registry
        assert registry.get_sample_value("gateway_requests_shed_total", {"reason": "pending"}) == 1
        assert registry.get_sample_value("gateway_requests_pending") == 0
        assert stack.fake.requests == []
        client.close()


def _admit(headers: list[tuple[bytes, bytes]], http_version: str = "1.1") -> str:
    """The admission middleware alone, around an app that answers: ``passed`` or the
    refusal's code."""
    reached: list[bool] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(True)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    middleware = AdmissionMiddleware(inner, admission=Admission(max_pending=4), max_header_bytes=64)
    scope: Scope = {"type": "http", "headers": headers, "http_version": http_version}
    scope[CONTEXT] = RequestContext(request_id="r", method="POST")
    try:
        asyncio.run(middleware(scope, receive, send))
    except GatewayError as exc:
        assert not reached
        return exc.code
    assert reached == [True]
    return "passed"


@pytest.mark.parametrize(
    ("headers", "http_version", "outcome"),
    [
        # Size: each header counts as ``name: value\r\n``; 64 bytes pass, 65 do not.
        ([(b"a" * 30, b"b" * 30)], "1.1", "passed"),
        ([(b"a" * 30, b"b" * 31)], "1.1", "request_header_too_large"),
        ([(b"x", b"1")] * 10, "1.1", "passed"),
        ([(b"x", b"1")] * 11, "1.1", "request_header_too_large"),
        ([(b"x", b"1")] * 10 + [(b"upgrade", b"h2c")], "1.1", "request_header_too_large"),
        ([(b"Upgrade", b"websocket")], "1.1", "upgrade_refused"),
        ([(b"upgrade", b"")], "1.1", "upgrade_refused"),
        ([(b"upgrade", b"h2c"), (b"transfer-encoding", b"gzip")], "1.1", "upgrade_refused"),
        ([(b"Transfer-Encoding", b"chunked")], "1.1", "passed"),
        ([(b"transfer-encoding", b"chunked")], "1.0", "invalid_transfer_encoding"),
        ([(b"transfer-encoding", b"gzip, chunked")], "1.1", "invalid_transfer_encoding"),
        (
            [(b"transfer-encoding", b"chunked"), (b"content-length", b"1")],
            "1.1",
            "invalid_transfer_encoding",
        ),
        ([(b"content-length", b"1"), (b"x-upgrade", b"1")], "1.1", "passed"),
        # Names of the two lengths that are neither, and both in any case.
        ([(b"upgradf", b"1"), (b"transfer-encodinh", b"chunked")], "1.1", "passed"),
        ([(b"UpGrAdE", b"h2c")], "1.1", "upgrade_refused"),
        ([(b"TRANSFER-ENCODING", b"gzip")], "1.1", "invalid_transfer_encoding"),
    ],
)
def test_the_request_framing_checks(
    headers: list[tuple[bytes, bytes]], http_version: str, outcome: str
) -> None:
    assert _admit(headers, http_version) == outcome
