"""An object's backend travels with its owner (``ownership.lookup`` over typed fakes of its
ports; ``rules.record_value`` / ``parse_record``): recorded, cached, found again at the
backends when the records lost it, and old records mean the first backend."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import NotFoundError
from gateway.operations.row import THREAD, Kind
from gateway.ownership.lookup import ObjectOwners
from gateway.ownership.rules import Location, parse_record, record_value, tenant_digest
from tests.test_ownership_cache import Clock, Records

A = tenant_digest("team-a")


class Homes:
    """An origin over several backends: each holds some objects' stamps."""

    def __init__(self, **held: dict[str, str | None]) -> None:
        self.held = held
        self.asked: list[str] = []

    async def find(self, kind: Kind, object_id: str) -> Location:
        self.asked.append(object_id)
        for name, stamps in self.held.items():
            if object_id in stamps:
                return Location(stamps[object_id], name)
        raise NotFoundError("No such object.", code=kind.not_found_code)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (A, (A, None)),
        (f"{A}@east-1", (A, "east-1")),
        (f"{A}@", None),
        (f"{A}@East", None),
        (f"{A}@a@b", None),
        ("not an owner", None),
        (None, None),
    ],
)
def test_record_values(value: str | None, parsed: tuple[str, str | None] | None) -> None:
    assert parse_record(value) == parsed
    if parsed is not None:
        assert record_value(*parsed) == value


def test_a_new_objects_backend_is_recorded_and_cached() -> None:
    async def scenario() -> None:
        records, homes = Records(), Homes()
        owners = ObjectOwners(records, homes, cache_ttl_s=60, clock=Clock(), default_backend="a")
        assert await owners.record("thread_1", A, "b")
        assert records.data["thread_1"] == f"{A}@b"
        assert await owners.locate(THREAD, "thread_1") == Location(A, "b")
        assert records.gets == 0 and homes.asked == []

    asyncio.run(scenario())


def test_an_old_record_means_the_first_backend() -> None:
    async def scenario() -> None:
        records = Records()
        records.data["thread_old"] = A  # written before there were several backends
        owners = ObjectOwners(records, Homes(), cache_ttl_s=0, clock=Clock(), default_backend="a")
        assert await owners.locate(THREAD, "thread_old") == Location(A, "a")

    asyncio.run(scenario())


def test_a_lost_record_is_found_at_its_backend_and_written_back() -> None:
    async def scenario() -> None:
        records, homes = Records(), Homes(a={}, b={"thread_b": A})
        owners = ObjectOwners(records, homes, cache_ttl_s=60, clock=Clock(), default_backend="a")
        assert await owners.locate(THREAD, "thread_b") == Location(A, "b")
        assert records.data["thread_b"] == f"{A}@b"
        assert await owners.owner(THREAD, "thread_b") == A and homes.asked == ["thread_b"]
        with pytest.raises(NotFoundError):
            await owners.locate(THREAD, "thread_nowhere")

    asyncio.run(scenario())


def test_a_record_naming_a_backend_no_longer_configured_is_probed_not_guessed() -> None:
    """Backend ``gone`` was removed from the config: its record is treated as missing, the
    configured backends are asked, and the one that holds the object is its home (written
    back). An object none of them holds is the kind's 404, never the first backend's guess."""

    async def scenario() -> None:
        records, homes = Records(), Homes(a={}, b={"thread_moved": A})
        records.data["thread_moved"] = f"{A}@gone"
        records.data["thread_lost"] = f"{A}@gone"
        owners = ObjectOwners(
            records,
            homes,
            cache_ttl_s=60,
            clock=Clock(),
            default_backend="a",
            backends=frozenset({"a", "b"}),
        )
        assert await owners.locate(THREAD, "thread_moved") == Location(A, "b")
        assert records.data["thread_moved"] == f"{A}@b"
        with pytest.raises(NotFoundError):
            await owners.locate(THREAD, "thread_lost")
        assert homes.asked == ["thread_moved", "thread_lost"]
        records.data["thread_kept"] = f"{A}@b"  # a configured backend's record: no lookup
        assert await owners.locate(THREAD, "thread_kept") == Location(A, "b")
        assert homes.asked == ["thread_moved", "thread_lost"]

    asyncio.run(scenario())
