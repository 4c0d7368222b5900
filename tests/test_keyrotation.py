"""Azure key rotation through a mounted Secret file, with a real ``gateway serve`` process
(security checklist G6).

The key file is laid out as the kubelet lays out a Secret volume: ``api-key`` is a symlink to
``..data/api-key`` and ``..data`` a symlink to a timestamped directory; an update writes a new
directory and renames a new ``..data`` link over the old one (one atomic swap). The gateway
polls the file every ``upstream.api_key_reload_s``: new requests use the new key within that
delay, with no restart; a missing or empty file keeps the last good key and is logged.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fakeazure import FakeAzure
from tests.gatewayproc import GatewayProcess, write_config
from tests.servers import ThreadedUvicorn
from tests.stack import PUBLIC_JWK, V2, base_config, make_token

pytestmark = pytest.mark.timeout(30)
RELOAD_S = 0.5
KEY1 = "key-one-0123456789abcdef"
KEY2 = "key-two-fedcba9876543210"


class SecretVolume:
    """A directory updated like a kubelet-managed Secret volume (AtomicWriter)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.generation = 0

    @property
    def key_path(self) -> Path:
        return self.root / "api-key"

    def write(self, content: str) -> None:
        self.generation += 1
        version = self.root / f"..2026_01_01_00_00_{self.generation:02d}.000000000"
        version.mkdir()
        (version / "api-key").write_text(content)
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(version.name)
        os.replace(tmp_link, self.root / "..data")  # the atomic swap
        if not self.key_path.is_symlink():
            self.key_path.symlink_to("..data/api-key")

    def remove(self) -> None:
        """The Secret's key is gone: the visible file no longer resolves."""
        (self.root / "..data").unlink()


@dataclass
class Rotating:
    fake: FakeAzure
    volume: SecretVolume
    proc: GatewayProcess

    def create_thread(self) -> httpx.Response:
        return httpx.post(
            f"{self.proc.url}/openai/threads",
            params={"api-version": V2},
            content=b"{}",
            timeout=5,
            headers={"Authorization": f"Bearer {make_token()}", "Content-Type": "application/json"},
        )

    def last_key_sent(self) -> str | None:
        return self.fake.requests[-1].header("api-key")


@pytest.fixture
def rotating(tmp_path: Path) -> Iterator[Rotating]:
    fake = FakeAzure(KEY1)
    volume = SecretVolume(tmp_path / "azure-openai")
    volume.write(KEY1)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    with ThreadedUvicorn(fake.app, lifespan="off") as upstream:
        config = base_config(upstream.url, str(jwks), None)
        config["upstream"] = {**config["upstream"], "api_key_reload_s": RELOAD_S}
        proc = GatewayProcess(
            write_config(config, tmp_path / "gateway.toml"),
            api_key="unused",
            redis_url="redis://127.0.0.1:1/0",
        )
        # As in the Deployment: the key comes only from the mounted file.
        del proc.env["AZURE_OPENAI_API_KEY"]
        proc.env["AZURE_OPENAI_API_KEY_FILE"] = str(volume.key_path)
        proc.start()
        try:
            proc.wait_ready()
            yield Rotating(fake, volume, proc)
        finally:
            proc.stop()


def _until_ok(rot: Rotating, timeout: float) -> float:
    """Seconds until a request succeeds; fails the test after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if rot.create_thread().status_code == 200:
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"no successful request within {timeout}s:\n{rot.proc.log()}")


def test_rotated_key_is_used_without_restart_and_survives_a_broken_file(rotating: Rotating) -> None:
    rot = rotating
    assert rot.proc.proc is not None
    pid = rot.proc.proc.pid
    assert rot.create_thread().status_code == 200
    assert rot.last_key_sent() == KEY1

    # Azure now accepts only key2 (the old key was regenerated); the Secret is updated.
    rot.fake.api_key = KEY2
    assert rot.create_thread().status_code == 502  # Azure's 401 is never passed on as 401
    rot.volume.write(KEY2)
    waited = _until_ok(rot, RELOAD_S + 3)
    assert waited <= RELOAD_S + 1.5
    assert rot.last_key_sent() == KEY2

    # The key disappears, then comes back empty: the last good key stays in use.
    for broken in (rot.volume.remove, lambda: rot.volume.write("")):
        broken()
        time.sleep(RELOAD_S * 3)
        for _ in range(3):
            assert rot.create_thread().status_code == 200
            assert rot.last_key_sent() == KEY2
    assert rot.proc.proc.poll() is None and rot.proc.proc.pid == pid  # never restarted
    log = rot.proc.log_path.read_text(errors="replace")
    assert log.count("cannot read the Azure key file; keeping the last good key") >= 2, log
    assert KEY1 not in log and KEY2 not in log  # the key itself is never logged
