"""The pipe's RESP2 (``redisconn.resp``): commands packed as redis-py packs them, and replies
read whole however the bytes were split."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection

from gateway.redisconn.resp import ErrorReply, ProtocolError, ReplyReader, command

REPLIES: list[tuple[bytes, Any]] = [
    (b"+OK\r\n", b"OK"),
    (b":42\r\n", 42),
    (b":-1\r\n", -1),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a bulk string holding CRLF
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*3\r\n$1\r\n1\r\n:2\r\n*2\r\n$1\r\nE\r\n$3\r\nbad\r\n", [b"1", 2, [b"E", b"bad"]]),
    (b"-NOSCRIPT No matching script.\r\n", ErrorReply("NOSCRIPT No matching script.")),
    (b"*2\r\n-ERR inside\r\n$1\r\nx\r\n", [ErrorReply("ERR inside"), b"x"]),
]


@pytest.mark.parametrize(("data", "expected"), REPLIES)
def test_each_reply_whole_and_split_at_every_byte(data: bytes, expected: Any) -> None:
    assert ReplyReader().feed(data) == [expected]
    for cut in range(1, len(data)):
        reader = ReplyReader()
        assert reader.feed(data[:cut]) == []
        assert reader.feed(data[cut:]) == [expected]


def test_several_replies_in_one_read_come_out_in_order() -> None:
    stream = b"".join(data for data, _ in REPLIES)
    reader = ReplyReader()
    got = reader.feed(stream[:7]) + reader.feed(stream[7:])
    assert got == [expected for _, expected in REPLIES]


@pytest.mark.parametrize("data", [b"?what\r\n", b"$x\r\n", b":1.5\r\n"])
def test_what_is_not_resp2_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyReader().feed(data)


def test_command_is_packed_as_redis_py_packs_it() -> None:
    args = [b"EVALSHA", b"a" * 40, b"2", b"k1", b"k2", b"c 2 - 1 10 20 1", b""]
    packed = Connection().pack_command(*args)
    assert command(*args) == b"".join(packed)
