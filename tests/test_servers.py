"""The test servers' port choice (tests/servers.py).

``test_workers`` failed in CI at the suite's end: ``metrics_port + 1`` (next to a port
``bind(0)`` had checked) was the local port of a connection left in TIME_WAIT, and worker 1
could not bind it. The first case shows that a connection's local port blocks a server's
bind even after it closed; ``free_ports`` draws from below the range the kernel picks those
from.
"""

from __future__ import annotations

import socket
import time

from tests.servers import bindable, ephemeral_range, free_ports


def test_a_closed_connections_local_port_blocks_a_server_bind() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        local = client.getsockname()[1]
        accepted, _ = server.accept()
        assert not bindable(local)  # established
        client.close()  # the side that closes first keeps TIME_WAIT (60 s on Linux)
        time.sleep(0.05)
        accepted.close()
        time.sleep(0.05)
        assert not bindable(local)
    low, high = ephemeral_range()
    assert low <= local <= high  # where bind(0) and outgoing connections take ports


def test_free_ports_are_free_outside_the_ephemeral_range_and_handed_out_once() -> None:
    low, high = ephemeral_range()
    seen: set[int] = set()
    for offsets in ((1,), (10000,), (1, 2, 3), ()):
        for _ in range(5):
            base = free_ports(*offsets)
            ports = {base + offset for offset in (0, *offsets)}
            assert all(bindable(p) for p in ports), ports
            assert all(not low <= p <= high for p in ports), (ports, low, high)
            assert not ports & seen, (ports, seen)
            seen |= ports
