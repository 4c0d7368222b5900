"""Graceful shutdown of a real ``gateway serve`` process (security checklist G1, G2, G4).

On SIGTERM: readiness fails at once; uvicorn stops accepting, closes idle keep-alive
connections, and every request it had accepted — plain calls and slow streams — finishes with
its full body within ``server.drain_timeout_s``; a stream longer than that is cut at the drain
timeout; the upstream and Redis clients close in the lifespan shutdown and the process exits 0.
New connections after SIGTERM are refused: in Kubernetes the pod's ``preStop`` sleep keeps
serving them while its endpoint is removed (SIGTERM comes only after preStop).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from gateway.cli import (
    GatewayServer,
    MetricsServer,
    connection_limits,
    serve_with_metrics,
    take_stop_signals,
)
from gateway.server.protocol import protocol_class
from tests.fakeazure import FakeAzure, ScriptedResponse
from tests.gatewayproc import GatewayProcess, write_config
from tests.servers import ThreadedUvicorn, free_port
from tests.stack import PUBLIC_JWK, V2, base_config, make_token, running_stack

pytestmark = pytest.mark.timeout(30)
API_KEY = "shutdown-test-key"
SLOW = "/openai/threads/thread_slow"


@dataclass
class Running:
    fake: FakeAzure
    proc: GatewayProcess


@dataclass
class Tally:
    ok: int = 0
    dropped_ids: set[str] = field(default_factory=set)  # transport errors: never answered
    failures: list[str] = field(default_factory=list)
    ok_ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def running(tmp_path: Path, redis_url: str, request: pytest.FixtureRequest) -> Iterator[Running]:
    drain_s: int = request.param
    fake = FakeAzure(API_KEY)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    with ThreadedUvicorn(fake.app, lifespan="off") as upstream:
        config = base_config(upstream.url, str(jwks), redis_url)
        config["server"] = {**config["server"], "drain_timeout_s": drain_s}
        proc = GatewayProcess(
            write_config(config, tmp_path / "gateway.toml"), api_key=API_KEY, redis_url=redis_url
        )
        proc.env["GATEWAY_LOG_LEVEL"] = "INFO"
        proc.start()
        try:
            proc.wait_ready()
            yield Running(fake, proc)
        finally:
            proc.stop()


def _slow_script(chunks: int, delay_s: float) -> ScriptedResponse:
    body = tuple(f'{{"part":{i}}}\n'.encode() for i in range(chunks))
    return ScriptedResponse(
        chunks=body, chunk_delay_s=delay_s, headers=(("content-type", "application/json"),)
    )


def _expected_slow_body(chunks: int) -> bytes:
    return b"".join(f'{{"part":{i}}}\n'.encode() for i in range(chunks))


def _load_loop(url: str, tally: Tally, stop: threading.Event, deadline: float) -> None:
    """Sequential thread creations over one keep-alive connection until the server is gone."""
    headers = {"Authorization": f"Bearer {make_token()}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            rid = f"load-{uuid.uuid4().hex}"
            try:
                r = client.post(
                    "/openai/threads",
                    params={"api-version": V2},
                    content=b"{}",
                    headers={**headers, "x-request-id": rid},
                )
            except httpx.TransportError:
                # Refused (listener closed), or an idle keep-alive connection closed under a
                # request the server never read. The test proves that none of these reached
                # Azure: a request the gateway accepted must complete. Stop once nothing
                # is listening any more.
                with tally.lock:
                    tally.dropped_ids.add(rid)
                if stop.is_set():
                    return
                time.sleep(0.02)
                continue
            with tally.lock:
                if r.status_code == 200 and r.json().get("object") == "thread":
                    tally.ok += 1
                    tally.ok_ids.add(rid)
                else:
                    tally.failures.append(f"{rid}: {r.status_code} {r.text[:200]}")


def _slow_stream(
    url: str, chunks: int, out: list[bytes | BaseException], request_id: str | None = None
) -> None:
    headers = {
        "Authorization": f"Bearer {make_token()}",
        "x-request-id": request_id or uuid.uuid4().hex,
    }
    try:
        with httpx.stream(
            "GET", f"{url}{SLOW}", params={"api-version": V2}, headers=headers, timeout=30
        ) as response:
            assert response.status_code == 200, response.status_code
            out.append(b"".join(response.iter_raw()))
    except BaseException as exc:  # recorded and asserted on by the test
        out.append(exc)


def _wait_for(predicate: object, timeout: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _not_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=0.5).status_code == 503
    except httpx.HTTPError:
        return True  # the listener is closed: as much a failed readiness probe as a 503


@pytest.mark.parametrize("running", [8], indirect=True)
def test_sigterm_under_load_drains_every_accepted_request(running: Running) -> None:
    fake, proc = running.fake, running.proc
    assert proc.proc is not None
    n_streams, chunks = 3, 8
    fake.script(_slow_script(chunks, 0.3), path_prefix=SLOW, count=n_streams)  # ~2.1 s each
    tally, stop = Tally(), threading.Event()
    deadline = time.monotonic() + 20
    loaders = [
        threading.Thread(target=_load_loop, args=(proc.url, tally, stop, deadline))
        for _ in range(4)
    ]
    streams: list[list[bytes | BaseException]] = [[] for _ in range(n_streams)]
    streamers = [
        threading.Thread(target=_slow_stream, args=(proc.url, chunks, out)) for out in streams
    ]
    for t in (*loaders, *streamers):
        t.start()
    # Every stream is in flight (its request reached Azure) and the load is flowing.
    assert _wait_for(lambda: sum(r.path == SLOW for r in fake.requests) == n_streams, 5)
    assert _wait_for(lambda: tally.ok >= 20, 5), tally

    proc.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert _wait_for(lambda: _not_ready(proc.url), 0.5), "readiness still passes after SIGTERM"
    try:
        exit_code = proc.proc.wait(timeout=8 + 5)
    finally:
        stop.set()
        for t in (*loaders, *streamers):
            t.join(timeout=15)
    elapsed = time.monotonic() - signalled

    assert exit_code == 0, proc.log()
    assert elapsed < 8, f"exit took {elapsed:.1f}s, drain timeout is 8s"
    # Streams accepted before SIGTERM completed byte for byte.
    for out in streams:
        assert out == [_expected_slow_body(chunks)], out
    # No accepted request failed: every request that reached Azure got its full 200 answer.
    reached = {
        r.header("x-ms-client-request-id") for r in fake.requests if r.path == "/openai/threads"
    }
    assert tally.failures == [], tally.failures
    assert reached <= tally.ok_ids, sorted(reached - tally.ok_ids, key=str)[:5]
    assert not reached & tally.dropped_ids
    log = proc.log_path.read_text(errors="replace")
    assert "shutting down: readiness fails" in log
    assert "Traceback" not in log and "Unclosed" not in log, log
    lines = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    served_ids = {line.get("request_id") for line in lines if line["logger"] == "gateway.access"}
    assert tally.ok_ids <= served_ids


@pytest.mark.parametrize("running", [2], indirect=True)
def test_stream_longer_than_drain_timeout_is_cut_and_the_process_exits(running: Running) -> None:
    fake, proc = running.fake, running.proc
    assert proc.proc is not None
    chunks = 40  # 40 x 0.25 s = 10 s, far beyond the 2 s drain timeout
    fake.script(_slow_script(chunks, 0.25), path_prefix=SLOW)
    out: list[bytes | BaseException] = []
    streamer = threading.Thread(
        target=_slow_stream, args=(proc.url, chunks, out, "drain-cut-stream")
    )
    streamer.start()
    assert _wait_for(lambda: any(r.path == SLOW for r in fake.requests), 5)
    time.sleep(0.5)
    proc.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    exit_code = proc.proc.wait(timeout=10)
    exited = time.monotonic() - signalled
    streamer.join(timeout=10)
    assert exit_code == 0, proc.log()
    assert 1.5 < exited < 6, f"exited {exited:.1f}s after SIGTERM (drain timeout 2 s)"
    # The client sees an abnormal end, not a complete body.
    assert len(out) == 1
    assert isinstance(out[0], httpx.RemoteProtocolError | httpx.ReadError), out
    log = proc.log_path.read_text(errors="replace")
    assert "timeout graceful shutdown exceeded" in log
    # The cut is logged as a cut (access log; the metrics observer reads the same context),
    # and nothing logs a traceback for the cancelled request.
    lines = [json.loads(line) for line in log.splitlines()]
    [access] = [
        line
        for line in lines
        if line["logger"] == "gateway.access" and line["request_id"] == "drain-cut-stream"
    ]
    assert access["status"] == 200 and access["stream_cut"] is True, access
    assert access["reason"] == "drain", access
    [cut] = [line for line in lines if line["logger"] == "gateway.proxy"]
    assert cut["message"].startswith("request cut at the end of the drain")
    assert cut["request_id"] == "drain-cut-stream"  # from the request's context, no ``extra``
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log


def test_a_drain_cut_is_counted_as_a_cut(tmp_path: Path) -> None:
    """The metrics side of the cut above, read from the registry of an in-process server
    running the gateway's protocol with a 1 s drain."""
    with running_stack(tmp_path) as stack:
        stack.fake.script(_slow_script(40, 0.25), path_prefix=SLOW)
        server = ThreadedUvicorn(
            stack.gateway,
            lifespan="off",
            timeout_graceful_shutdown=1,
            http=protocol_class(connection_limits(stack.config)),
        ).start()
        out: list[bytes | BaseException] = []
        streamer = threading.Thread(target=_slow_stream, args=(server.url, 40, out))
        streamer.start()
        assert _wait_for(lambda: any(r.path == SLOW for r in stack.fake.requests), 5)
        time.sleep(0.3)
        server.stop()
        streamer.join(10)
        assert len(out) == 1 and isinstance(out[0], httpx.RemoteProtocolError | httpx.ReadError)
        metrics = stack.gateway.metrics
        assert metrics is not None
        value = metrics.registry.get_sample_value
        assert value("gateway_upstream_errors_total", {"kind": "stream_cut"}) == 1
        assert value("gateway_streams_in_flight") in (None, 0)
        assert value("gateway_requests_in_flight") == 0


def test_signal_handler_fails_readiness_at_once(tmp_path: Path) -> None:
    """The in-process view of the hook: the signal handler itself flips readiness."""
    with running_stack(tmp_path) as stack:
        assert httpx.get(f"{stack.url}/readyz").status_code == 200
        server = GatewayServer(uvicorn.Config(stack.gateway), stack.gateway)
        server.handle_exit(signal.SIGTERM, None)
        assert server.should_exit
        ready = httpx.get(f"{stack.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["draining"] == "yes"
        assert httpx.get(f"{stack.url}/healthz").status_code == 200  # liveness is unaffected


class _HeldMetricsServer(MetricsServer):
    """The real metrics listener whose start waits until the test lets it go on."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.entered.set()
        await self.release.wait()
        await super().startup(sockets)


def test_a_sigterm_while_the_metrics_listener_starts_stops_the_server(tmp_path: Path) -> None:
    """``gateway serve`` takes SIGTERM before uvicorn does (``take_stop_signals``): one that
    arrives while the metrics listener is still starting, before the proxy's server takes
    the signals, stops that server as soon as it has started. It used to be swallowed, and
    the process served on (the supervisor's crash test hung 1 run in 3)."""
    with running_stack(tmp_path) as stack:
        port, metrics_port = free_port(), free_port()
        server = GatewayServer(
            uvicorn.Config(stack.gateway, host="127.0.0.1", port=port, lifespan="off"),
            stack.gateway,
        )
        metrics_app = stack.gateway.metrics_app
        assert metrics_app is not None
        metrics = _HeldMetricsServer(
            uvicorn.Config(metrics_app, host="127.0.0.1", port=metrics_port, lifespan="off")
        )
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        async def scenario() -> tuple[bool, bool]:
            serving = asyncio.create_task(serve_with_metrics(server, metrics))
            await asyncio.wait_for(metrics.entered.wait(), 5)
            os.kill(os.getpid(), signal.SIGTERM)  # the window: nothing of uvicorn's has it
            await asyncio.sleep(0.1)  # the handler runs between two bytecodes of this thread
            metrics.release.set()
            try:
                await asyncio.wait_for(asyncio.shield(serving), 10)
            except TimeoutError:
                server.should_exit = True  # the old behaviour: serving on; end the test
                await serving
                return server.started, False
            return server.started, True

        try:
            take_stop_signals(server)
            started, stopped = asyncio.run(scenario())
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        assert started  # it did start (so the shutdown closed what the start-up opened)
        assert stopped, "the server served on after a SIGTERM sent while the metrics started"
        for closed in (port, metrics_port):  # both listeners are gone
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", closed), 0.5).close()
