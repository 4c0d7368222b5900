"""Reading a request body within its deadline (``policy.bodyread.read_body``): the deadline
becomes a 408, a cancellation from elsewhere stays a cancellation, and a body read in time
leaves no timer behind (the task is not cancelled later)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.errors import ClientGoneError, PayloadTooLargeError, RequestTimeoutError
from gateway.policy.bodyread import read_body

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
