"""Files stream through the gateway in both directions with bounded memory: a 64 MiB upload
with the stock SDK and its 64 MiB content read back, through a ``gateway serve`` child process
whose peak resident memory (``VmHWM``) is measured before and after."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import openai

from gateway.ownership.filenames import split_filename
from tests.gatewayproc import GatewayProcess, served
from tests.stack import V2, make_token

SIZE = 64 * 1024 * 1024
#: Peak-memory growth allowed over the warmed-up gateway: well under the file's size.
BOUND = 16 * 1024 * 1024


def peak_rss(proc: GatewayProcess) -> int:
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_large_file_streams_up_and_down_with_bounded_memory(
    tmp_path: Path, redis_url: str
) -> None:
    source = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for i in range(SIZE // len(block)):
            chunk = bytes([i % 256]) + block[1:]
            out.write(chunk)
            digest.update(chunk)
    with served(tmp_path, redis_url) as (fake, proc):
        client = openai.AzureOpenAI(
            azure_endpoint=proc.url,
            api_version=V2,
            max_retries=0,
            azure_ad_token=make_token("team-a"),
            timeout=120,
        )
        with client:
            # Warm up every code path once, then measure the peak from there.
            small = client.files.create(file=("warm.txt", b"warm"), purpose="assistants")
            assert client.files.content(small.id).read() == b"warm"
            before = peak_rss(proc)

            with source.open("rb") as f:
                made = client.files.create(file=f, purpose="assistants")
            after_upload = peak_rss(proc)
            stored = fake.store.files.items[made.id]
            assert hashlib.sha256(stored.content).digest() == digest.digest()
            assert split_filename(stored.filename)[1] == "big.bin"

            chunks = 0
            received = hashlib.sha256()
            with httpx.stream(
                "GET",
                f"{proc.url}/openai/files/{made.id}/content",
                params={"api-version": V2},
                headers={"Authorization": f"Bearer {make_token('team-a')}"},
                timeout=120,
            ) as response:
                assert response.status_code == 200
                for piece in response.iter_raw():
                    chunks += 1
                    received.update(piece)
            after_content = peak_rss(proc)
    assert received.digest() == digest.digest()
    assert chunks > 64, "relayed chunk by chunk, not as one body"
    assert after_upload - before < BOUND, (before, after_upload)
    assert after_content - before < BOUND, (before, after_content)
