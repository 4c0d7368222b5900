"""Reading a request body within its deadline (``policy.bodyread.read_body``): the deadline
becomes a 408, a cancellation from elsewhere stays a cancellation, and a body read in time
leaves no timer behind (the task is not cancelled later)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.errors import (
    BadRequestError,
    ClientGoneError,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from gateway.policy.bodyread import body_headers, length_of, read_body, within_limit

HEADERS = [(b"content-type", b"application/json")]


def receiving(*messages: dict[str, Any], then_wait: bool = True) -> Any:
    """An ASGI ``receive`` giving ``messages`` (each after a loop turn), then waiting forever."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            await asyncio.sleep(0)
            return queue.pop(0)
        if not then_wait:
            raise AssertionError("read past the last message")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def test_a_body_in_pieces_is_joined_and_leaves_no_timer() -> None:
    async def main() -> tuple[bytes, int]:
        receive = receiving(
            {"type": "http.request", "body": b'{"a"', "more_body": True},
            {"type": "http.request", "body": b":1}", "more_body": False},
            then_wait=False,
        )
        body = await read_body(receive, HEADERS, max_bytes=100, timeout_s=0.05)
        await asyncio.sleep(0.15)  # past the deadline: nothing cancels this task
        task = asyncio.current_task()
        assert task is not None
        return body, task.cancelling()

    assert asyncio.run(main()) == (b'{"a":1}', 0)


def test_a_body_that_does_not_arrive_in_time_is_a_408() -> None:
    async def main() -> int:
        receive = receiving({"type": "http.request", "body": b"{", "more_body": True})
        with pytest.raises(RequestTimeoutError, match="did not arrive in time"):
            await read_body(receive, HEADERS, max_bytes=100, timeout_s=0.05)
        await asyncio.sleep(0)  # the deadline's cancellation was consumed: none is pending
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert asyncio.run(main()) == 0


def test_a_cancellation_from_elsewhere_stays_one() -> None:
    async def main() -> None:
        reading = asyncio.ensure_future(read_body(receiving(), HEADERS, max_bytes=100, timeout_s=5))
        await asyncio.sleep(0.01)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading

    asyncio.run(main())


def test_a_cancellation_beside_the_deadline_is_not_taken_for_it() -> None:
    """Cancelled from elsewhere as the deadline (already due) fires: cancelled, as under
    ``asyncio.timeout`` (both cancellations requested, only the deadline's is taken back)."""

    async def main() -> None:
        reading = asyncio.ensure_future(read_body(receiving(), HEADERS, max_bytes=100, timeout_s=0))
        await asyncio.sleep(0)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading

    asyncio.run(main())


def test_a_timeout_from_receive_is_a_408_and_other_refusals_pass() -> None:
    async def timing_out() -> dict[str, Any]:
        raise TimeoutError

    async def main() -> None:
        with pytest.raises(RequestTimeoutError):
            await read_body(timing_out, HEADERS, max_bytes=100, timeout_s=5)
        with pytest.raises(ClientGoneError):
            await read_body(
                receiving({"type": "http.disconnect"}), HEADERS, max_bytes=100, timeout_s=5
            )
        with pytest.raises(PayloadTooLargeError):
            await read_body(
                receiving({"type": "http.request", "body": b"x" * 101, "more_body": True}),
                HEADERS,
                max_bytes=100,
                timeout_s=5,
            )

    asyncio.run(main())


class _CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts the timers armed on it."""

    timers = 0

    def call_at(  # type: ignore[override]
        self, when: float, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)


def _timers_armed(main: Any) -> tuple[Any, int]:
    with asyncio.Runner(loop_factory=_CountingLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, _CountingLoop)
        before = loop.timers
        result = runner.run(main())
        return result, loop.timers - before


def test_a_first_piece_at_once_then_a_wait_is_bounded_by_the_deadline() -> None:
    pieces = [
        {"type": "http.request", "body": b'{"a"', "more_body": True},
        {"type": "http.request", "body": b":1}", "more_body": False},
    ]

    async def first_at_once() -> dict[str, Any]:
        if len(pieces) == 2:
            return pieces.pop(0)
        await asyncio.sleep(0)  # waits a loop turn (no timer of its own)
        return pieces.pop(0)

    async def main() -> bytes:
        return await read_body(first_at_once, HEADERS, max_bytes=100, timeout_s=5)

    assert _timers_armed(main) == (b'{"a":1}', 1)

    async def stalls() -> None:
        receive = receiving(then_wait=True)
        first = {"type": "http.request", "body": b"{", "more_body": True}

        async def once_then_stall() -> dict[str, Any]:
            nonlocal first
            if first:
                message, first = first, {}
                return message
            waited: dict[str, Any] = await receive()
            return waited

        with pytest.raises(RequestTimeoutError):
            await read_body(once_then_stall, HEADERS, max_bytes=100, timeout_s=0.05)

    asyncio.run(stalls())


def test_a_resumed_receive_gets_what_the_task_sends_and_throws() -> None:
    """A ``receive`` that waits behaves as a plain ``await`` of it under the deadline: a
    future's result reaches it, and an exception thrown into the task (a cancellation)
    reaches it too, which may handle it and go on waiting."""
    seen: list[str] = []

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[bytes] = loop.create_future()

        async def receive() -> dict[str, Any]:
            try:
                body = await asyncio.shield(arrived)
            except asyncio.CancelledError:
                seen.append("cancelled")
                body = await arrived  # handled: waits on (the caller takes the cancel back)
            return {"type": "http.request", "body": body, "more_body": False}

        reading = asyncio.ensure_future(read_body(receive, HEADERS, max_bytes=100, timeout_s=5))
        await asyncio.sleep(0)
        reading.cancel()
        await asyncio.sleep(0)
        arrived.set_result(b"{}")
        return await reading

    assert asyncio.run(main()) == b"{}"
    assert seen == ["cancelled"]


def test_body_headers_are_read_in_one_pass() -> None:
    headers = [
        (b"Content-Type", b"application/json"),
        (b"x-other", b"1"),
        (b"content-length", b"12"),
        (b"CONTENT-TYPE", b"text/plain"),
    ]
    assert body_headers(headers) == ([b"12"], [b"application/json", b"text/plain"])
    assert length_of([b"12"]) == 12 and length_of([]) is None
    for values in ([b"1", b"1"], [b"-1"], [b"1e3"], [b"9" * 19]):
        with pytest.raises(BadRequestError):
            length_of(values)
    with pytest.raises(PayloadTooLargeError):
        within_limit(101, 100)
    assert within_limit(100, 100) == 100
