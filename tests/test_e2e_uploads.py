"""File uploads end to end: the stock openai SDK (and raw HTTP where the SDK cannot send what
is tested) through a real gateway to the recording fake Azure. What reached the fake is
asserted: the owner-stamped filename, the exact bytes, the gateway's own multipart framing —
and nothing at all when the gateway refuses."""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import openai
import pytest

from gateway.auth.tokens import default_domain
from gateway.ownership.filenames import split_filename
from gateway.ownership.rules import tenant_digest
from tests.fakeazure import FakeAzure, RecordedRequest
from tests.rawhttp import RawResponse
from tests.servers import RedisServer
from tests.stack import ISSUER, V1, V2, Stack, deep_merge, make_token, running_stack

A = "team-a"
MAX_FILE = 200_000
OVERRIDES = {
    "threads": {"ownership": True, "unknown": "deny"},
    "server": {"body_timeout_s": 1.0},
    "profiles": {
        "writer": {
            "operations": ["*"],
            "policy": {"max_file_bytes": MAX_FILE, "file_purposes": ["assistants", "batch"]},
        }
    },
}


def owner_of(namespace: str) -> str:
    return tenant_digest(f"{default_domain(ISSUER)}:{namespace}")


@pytest.fixture(scope="module", params=["h1", "aiohttp", "httpx"])
def upload_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
) -> Iterator[Stack]:
    """Both upstream transports stream the upload (and abort it) the same way."""
    url = os.environ.get("GATEWAY_TEST_REDIS_URL") or redis_server.url
    overrides = deep_merge(OVERRIDES, {"upstream": {"transport": request.param}})
    with running_stack(
        tmp_path_factory.mktemp("uploads"), redis_url=url, overrides=overrides
    ) as running:
        yield running


@pytest.fixture
def up(upload_stack: Stack) -> Stack:
    upload_stack.fake.reset()
    return upload_stack


def sdk(stack: Stack, version: str = V2) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=stack.url,
        api_version=version,
        max_retries=0,
        azure_ad_token=stack.token(namespace=A),
    )


def uploads(fake: FakeAzure) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.path == "/openai/files" and r.method == "POST"]


@pytest.mark.parametrize("version", [V1, V2])
def test_the_sdk_upload_reaches_azure_stamped_and_byte_exact(up: Stack, version: str) -> None:
    content = bytes(range(256)) * 300 + b"\r\n--not-a-boundary\r\n"
    with sdk(up, version) as client:
        made = client.files.create(file=("résumé.pdf", io.BytesIO(content)), purpose="assistants")
    (stored,) = up.fake.store.files.items.values()
    assert stored.id == made.id
    assert stored.filename == f"gwo-{owner_of(A)}-résumé.pdf"
    assert stored.content == content
    assert stored.content_type == "application/pdf"
    assert stored.purpose == "assistants"
    (record,) = uploads(up.fake)
    ctype = record.header("content-type") or ""
    assert ctype.startswith("multipart/form-data; boundary=gateway-")
    assert record.header("content-length") == str(len(record.body))  # exact, not chunked
    assert record.header("transfer-encoding") is None
    assert record.body.startswith(b"--gateway-")
    assert split_filename(made.filename)[1] == "résumé.pdf"


def test_a_chunked_upload_is_streamed_chunked(up: Stack) -> None:
    content = b"x" * 70_000
    answer = send_chunked(up, multipart(content, "data.bin"), [1000, 5, 60_000])
    assert answer.status == 200, answer.body
    (stored,) = up.fake.store.files.items.values()
    assert stored.content == content and stored.filename.endswith("-data.bin")
    (record,) = uploads(up.fake)
    assert record.header("transfer-encoding") == "chunked"
    assert record.header("content-length") is None


@pytest.mark.parametrize(
    ("filename", "purpose", "code"),
    [
        ("notes.txt", "fine-tune", "purpose_not_allowed"),
        ("../etc/passwd", "assistants", "invalid_filename"),
        (f"gwo-{'0' * 32}-x.txt", "assistants", "invalid_filename"),
        ("a\x1b[2Jb.txt", "assistants", "invalid_filename"),
    ],
)
def test_refused_uploads_never_reach_azure(
    up: Stack, filename: str, purpose: str, code: str
) -> None:
    with sdk(up) as client, pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=(filename, io.BytesIO(b"data")), purpose=purpose)  # type: ignore[arg-type]
    assert refused.value.status_code == 400
    assert refused.value.code == code
    assert uploads(up.fake) == [] and up.fake.store.files.items == {}


def test_a_declared_file_over_the_limit_is_413_before_a_byte_is_sent(up: Stack) -> None:
    with sdk(up) as client, pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.bin", io.BytesIO(b"x" * (MAX_FILE + 1))), purpose="batch")
    assert refused.value.status_code == 413
    assert refused.value.body == {
        "code": "file_too_large",
        "message": f"The file is larger than {MAX_FILE} bytes.",
        "param": "file",
        "type": "invalid_request_error",
    }
    assert uploads(up.fake) == []


def test_a_chunked_file_over_the_limit_is_cut_and_azure_keeps_nothing(up: Stack) -> None:
    answer = send_chunked(up, multipart(b"y" * (MAX_FILE + 10_000), "big.bin"), [50_000] * 5)
    assert answer.status == 413 and answer.json()["error"]["code"] == "file_too_large"
    assert up.fake.store.files.items == {}
    records = uploads(up.fake)
    assert all(r.closed_early.wait(5) for r in records)


def test_junk_after_the_close_delimiter_aborts_the_upstream_request(up: Stack) -> None:
    answer = send_chunked(up, multipart(b"z" * 5000, "a.txt") + b"epilogue", [6000])
    assert answer.status == 400 and answer.json()["error"]["code"] == "invalid_multipart"
    assert up.fake.store.files.items == {}


def test_a_stalled_upload_is_408_and_azure_keeps_nothing(up: Stack) -> None:
    body = multipart(b"s" * 20_000, "slow.txt")
    answer = send_chunked(up, body, [12_000], pause_s=2.0)
    assert answer.status == 408 and answer.json()["error"]["code"] == "request_body_timeout"
    assert up.fake.store.files.items == {}


def test_a_slow_upload_longer_than_the_upstream_read_timeout_succeeds(up: Stack) -> None:
    """Each chunk within ``body_timeout_s`` (1 s), the whole upload longer than Azure's
    ``read_timeout_s`` (5 s): the upstream read timeout does not run while the body is sent."""
    assert up.config.upstream.read_timeout_s < 7 * 0.9
    content = b"w" * 7000
    started = time.monotonic()
    answer = send_chunked(up, multipart(content, "slow.txt"), [1000] * 7, gap_s=0.9)
    assert time.monotonic() - started > up.config.upstream.read_timeout_s
    assert answer.status == 200, answer.body
    (stored,) = up.fake.store.files.items.values()
    assert stored.content == content


def test_a_caller_gone_midway_leaves_nothing_at_azure(up: Stack) -> None:
    body = multipart(b"g" * 50_000, "gone.txt")
    host, port = up.url.split("//", 1)[1].split(":")
    head = (
        f"POST /openai/files?api-version={V2} HTTP/1.1\r\nHost: gateway.test\r\n"
        f"Authorization: Bearer {make_token(A)}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body[:20_000])
        time.sleep(0.3)  # the upstream request is under way (the fake records it at its end)
    gone = time.monotonic()
    while not uploads(up.fake) and time.monotonic() < gone + 5:
        time.sleep(0.01)
    (record,) = uploads(up.fake)
    # Cut when the caller went, not by the 1 s body timeout.
    assert record.closed_early.is_set() and time.monotonic() - gone < 0.8
    assert up.fake.store.files.items == {}


def test_an_upload_that_is_not_multipart_is_refused(up: Stack) -> None:
    raw = send_chunked(up, b'{"purpose": "assistants"}', [], content_type="application/json")
    assert raw.status == 400 and raw.json()["error"]["code"] == "invalid_multipart"
    assert uploads(up.fake) == []


# ------------------------------------------------------------------------ raw HTTP helpers

BOUNDARY = "caller-boundary-1234"


def multipart(content: bytes, filename: str, purpose: str = "assistants") -> bytes:
    b = BOUNDARY.encode()
    return (
        b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        + purpose.encode()
        + b"\r\n--"
        + b
        + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename.encode()
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + content
        + b"\r\n--"
        + b
        + b"--\r\n"
    )


def _chunks(body: bytes, sizes: Iterable[int]) -> list[bytes]:
    out, at = [], 0
    for size in sizes:
        out.append(body[at : at + size])
        at += size
    out.append(body[at:])
    return [c for c in out if c]


def send_chunked(
    stack: Stack,
    body: bytes,
    sizes: Iterable[int],
    *,
    pause_s: float = 0.0,
    gap_s: float = 0.0,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
) -> RawResponse:
    """POST /openai/files with ``Transfer-Encoding: chunked``, ``body`` cut at ``sizes``
    (``pause_s`` before the last chunk, ``gap_s`` before every other); the response, read
    even when the gateway answered before the body ended."""
    host, port = stack.url.split("//", 1)[1].split(":")
    head = (
        f"POST /openai/files?api-version={V2} HTTP/1.1\r\nHost: gateway.test\r\n"
        f"Authorization: Bearer {make_token(A)}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    pieces = _chunks(body, sizes)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(head)
            for i, piece in enumerate(pieces):
                if pause_s and i == len(pieces) - 1:
                    time.sleep(pause_s)
                elif gap_s and i:
                    time.sleep(gap_s)
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the gateway answered and closed before the body ended
        return _read_response(sock)


def _read_response(sock: socket.socket) -> RawResponse:
    f = sock.makefile("rb")
    status = int(f.readline().split()[1])
    headers: list[tuple[str, str]] = []
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
    return RawResponse(status, headers, f.read(length) if length is not None else f.read())


def test_the_helpers_build_what_the_fake_accepts(tmp_path: Path) -> None:
    """The raw body above is a valid upload on its own (so the refusals test the gateway)."""
    fake = FakeAzure("k")
    stored = fake.store.files.upload(
        f"multipart/form-data; boundary={BOUNDARY}", multipart(b"abc", "x.txt")
    )
    assert (stored.filename, stored.content, stored.purpose) == ("x.txt", b"abc", "assistants")
