"""Each demo's state directory: its key pair, config, token and the lock it holds (no network).

``<root>/<host>-<port>``, the root being ``$GATEWAY_DEMO_DIR``, else
``$XDG_RUNTIME_DIR/assistants-gateway-demo``, else ``/tmp/assistants-gateway-demo-<uid>``,
each directory private to the user (0700; one another user made or can write to is refused).
The running demo holds an exclusive ``flock`` on ``lock`` for its whole life: a second demo on
the same address is refused before it touches the first one's keys, and ``gateway token`` finds
the running demos by their held locks. The directory is removed when the demo stops; after a
crash it stays (the lock goes with the process) and the next demo on that address takes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path


class DemoError(Exception):
    """A problem the user can fix, said in one sentence (printed without a traceback)."""


def state_root(environ: Mapping[str, str] = os.environ) -> Path:
    if explicit := environ.get("GATEWAY_DEMO_DIR"):
        return Path(explicit)
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "assistants-gateway-demo"
    return Path(tempfile.gettempdir()) / f"assistants-gateway-demo-{os.getuid()}"


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter (made if missing): refuses one that
    another user made or could write to (the key pair lives below it)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise DemoError(
            f"{path} is not a private directory of this user (mode 0700, owned by uid "
            f"{os.getuid()}): remove it, or set GATEWAY_DEMO_DIR to another directory"
        )
    return path


@dataclass(frozen=True)
class DemoFiles:
    state_dir: Path

    @property
    def private_key(self) -> Path:
        return self.state_dir / "demo-signing-key.pem"

    @property
    def jwks(self) -> Path:
        return self.state_dir / "jwks.json"

    @property
    def config(self) -> Path:
        return self.state_dir / "gateway.toml"

    @property
    def api_key(self) -> Path:
        return self.state_dir / "azure-api-key"

    @property
    def token(self) -> Path:
        return self.state_dir / "token"

    @property
    def lock(self) -> Path:
        return self.state_dir / "lock"


def demo_files(host: str, port: int, root: Path | None = None) -> DemoFiles:
    return DemoFiles((root or state_root()) / f"{host}-{port}")


def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError):
        return f" (pid {lock.read_text().strip()})"
    return ""


@contextlib.contextmanager
def claimed(files: DemoFiles) -> Generator[None, None, None]:
    """Hold the demo's lock for its life; remove the state directory at the end."""
    private_dir(files.state_dir.parent)
    private_dir(files.state_dir)
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(
                f"another `gateway demo` is running on this address{_holder(files.lock)}, "
                f"state {files.state_dir}: stop it, or choose another --port"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            shutil.rmtree(files.state_dir, ignore_errors=True)
    finally:
        os.close(fd)


def is_running(files: DemoFiles) -> bool:
    """Whether a demo holds this state directory's lock (and its config exists)."""
    if not files.config.is_file():
        return False
    try:
        fd = os.open(files.lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def running_demos(root: Path) -> list[DemoFiles]:
    if not root.is_dir():
        return []
    found = (DemoFiles(d) for d in sorted(root.iterdir()) if d.is_dir())
    return [f for f in found if is_running(f)]


def find_demo(port: int | None) -> DemoFiles:
    """The running demo on ``port``, else the only one running."""
    root = state_root()
    running = running_demos(root)
    if port is not None:
        chosen = [f for f in running if f.state_dir.name.rsplit("-", 1)[-1] == str(port)]
    else:
        chosen = running
    if len(chosen) == 1:
        return chosen[0]
    listed = ", ".join(f.state_dir.name for f in running) or "none"
    if not chosen:
        where = f"on port {port}" if port is not None else "running"
        raise DemoError(f"no `gateway demo` {where} (under {root}; running: {listed})")
    raise DemoError(f"several demos are running ({listed}): choose one with --port")
