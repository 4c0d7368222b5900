"""``gateway.deadline.Deadline`` answers as ``asyncio.timeout`` does, scenario by scenario, on
the default loop and on uvloop: the deadline is a ``TimeoutError`` and leaves no cancellation
requested, a cancellation from elsewhere stays one (also in the turn the deadline fires),
other errors pass, a block done in time leaves no timer behind, nested deadlines each answer
for their own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway.deadline import Deadline

Body = Callable[[], Awaitable[Any]]


async def under(kind: str, delay: float, body: Body) -> Any:
    if kind == "asyncio":
        async with asyncio.timeout(delay):
            return await body()
    with Deadline(delay):
        return await body()


async def forever() -> None:
    await asyncio.Event().wait()


async def quick() -> str:
    await asyncio.sleep(0)
    return "done"


async def failing() -> None:
    await asyncio.sleep(0)
    raise KeyError("inner")


async def outcome(run: Callable[[], Awaitable[Any]]) -> tuple[str, int]:
    """What the block gave (a value or the exception's type), and the cancellations still
    requested of the task afterwards (after a further loop turn)."""
    try:
        got = repr(await run())
    except (Exception, asyncio.CancelledError) as exc:
        got = type(exc).__name__
    await asyncio.sleep(0)
    task = asyncio.current_task()
    assert task is not None
    return got, task.cancelling()


def in_task(main: Callable[[], Coroutine[Any, Any, Any]], loop: str) -> Any:
    return (uvloop.run if loop == "uvloop" else asyncio.run)(main())


async def expired(kind: str) -> Any:
    return await outcome(lambda: under(kind, 0.02, forever))


async def in_time(kind: str) -> Any:
    async def run() -> Any:
        value = await under(kind, 0.02, quick)
        await asyncio.sleep(0.06)  # past the deadline: nothing cancels the task
        return value

    return await outcome(run)


async def error_passes(kind: str) -> Any:
    return await outcome(lambda: under(kind, 1, failing))


async def cancelled_elsewhere(kind: str) -> Any:
    async def main() -> Any:
        inner = asyncio.ensure_future(under(kind, 5, forever))
        await asyncio.sleep(0.01)
        inner.cancel()
        return await inner

    return await outcome(main)


async def cancelled_as_it_fires(kind: str) -> Any:
    async def main() -> Any:
        inner = asyncio.ensure_future(under(kind, 0, forever))
        await asyncio.sleep(0)
        inner.cancel()
        return await inner

    return await outcome(main)


async def nested_inner_fires(kind: str) -> Any:
    async def inner() -> Any:
        try:
            await under(kind, 0.02, forever)
        except TimeoutError:
            return "inner timed out"
        return "no"

    return await outcome(lambda: under(kind, 5, inner))


async def nested_outer_fires(kind: str) -> Any:
    async def inner() -> Any:
        return await under(kind, 5, forever)

    return await outcome(lambda: under(kind, 0.02, inner))


SCENARIOS: dict[Callable[[str], Coroutine[Any, Any, Any]], tuple[str, int]] = {
    expired: ("TimeoutError", 0),
    in_time: ("'done'", 0),
    error_passes: ("KeyError", 0),
    cancelled_elsewhere: ("CancelledError", 0),
    cancelled_as_it_fires: ("CancelledError", 0),
    nested_inner_fires: ("'inner timed out'", 0),
    nested_outer_fires: ("TimeoutError", 0),
}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=lambda s: s.__name__)
def test_a_deadline_answers_as_asyncio_timeout(
    scenario: Callable[[str], Coroutine[Any, Any, Any]], loop: str
) -> None:
    ours = in_task(lambda: scenario("deadline"), loop)
    theirs = in_task(lambda: scenario("asyncio"), loop)
    assert ours == theirs == SCENARIOS[scenario]


def test_a_deadline_needs_a_task() -> None:
    with pytest.raises(RuntimeError), Deadline(1):  # no loop running
        pass

    async def main() -> None:
        errors: list[BaseException] = []

        def outside_a_task() -> None:
            try:
                Deadline(1).__enter__()
            except RuntimeError as exc:
                errors.append(exc)

        asyncio.get_running_loop().call_soon(outside_a_task)
        await asyncio.sleep(0.01)
        assert [str(e) for e in errors] == ["a Deadline must be entered inside a task"]

    asyncio.run(main())
