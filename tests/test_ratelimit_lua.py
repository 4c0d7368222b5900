"""The limiter's script (``gateway.ratelimit.lua``) against the script it replaced
(``tests/limiterlua.py``, where every operation reads and writes Redis itself), on a real
redis-server: for any batch of checks, releases and renewals over shared keys, with clocks that
stand still or move, wrong-typed keys and refusals, the new script gives the same replies and
leaves the same keys: the same values and members, and the same TTLs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.ratelimit.lua import LIMITER_LUA
from tests.limiterlua import REFERENCE_LUA
from tests.servers import RedisServer

PREFIX = "lua-eq:"
#: Two GCRA keys and two lease sets, so that operations of one batch share keys.
TATS = [f"{PREFIX}{{s}}:t{i}" for i in range(2)]
LEASES = [f"{PREFIX}{{s}}:cc{i}" for i in range(2)]
#: A key of the wrong type: an operation naming it fails alone (``{'E', …}``).
WRONG = f"{PREFIX}{{s}}:wrong"
T0 = 1_800_000_000_000_000  # µs, the operations' clock (an override, so both runs agree)

Op = tuple[list[str], str]  # (keys, argument string)


@pytest.fixture(scope="module")
def sync(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    yield client
    client.close()


def _rule() -> st.SearchStrategy[tuple[int, int, int]]:
    # emission interval and tolerance in whole seconds (as µs): every key lives a second or
    # more (none expires while the test reads it), and a TTL written by a different operation
    # differs by a second or more
    return st.tuples(
        st.integers(1, 4).map(lambda s: s * 1_000_000),
        st.integers(0, 60).map(lambda s: s * 1_000_000),
        st.integers(1, 3),
    )


@st.composite
def _ops(draw: st.DrawFn) -> list[Op]:
    clock = T0
    members: list[str] = []
    ops: list[Op] = []
    for n in itertools.count():
        if n >= draw(st.integers(1, 14)) and n > 0:
            break
        clock += draw(st.sampled_from([0, 0, 0, 1, 700, 250_000, 3_000_000]))
        kind = draw(st.sampled_from("ccccrrn"))
        if kind == "c" or not members:
            tat_keys = draw(st.lists(st.sampled_from([*TATS, WRONG]), min_size=0, max_size=2))
            rules = [draw(_rule()) for _ in tat_keys]
            words = [str(clock), str(len(rules))] + [str(x) for rule in rules for x in rule]
            keys = list(tat_keys)
            if draw(st.booleans()):
                keys.append(draw(st.sampled_from([*LEASES, WRONG])))
                member = f"m{n}"
                members.append(member)
                ttl = draw(st.integers(1, 5_000)) * 1000
                words += [str(draw(st.sampled_from([1, 1, 2, 4]))), str(ttl), member]
            deadline = draw(st.sampled_from(["-", str(clock - 1), str(clock + 10**6)]))
            ops.append((keys, " ".join(["c", str(len(keys)), *words, deadline])))
        elif kind == "r":
            member = draw(st.sampled_from([*members, "never-held"]))
            ops.append(([draw(st.sampled_from(LEASES))], f"r 1 {member}"))
        else:
            member = draw(st.sampled_from(members))
            ttl = draw(st.integers(1, 5_000)) * 1000
            ops.append(([draw(st.sampled_from(LEASES))], f"n 1 {member} {ttl} {clock}"))
    return ops


def _clear(sync: redis.Redis) -> None:
    keys = list(sync.scan_iter(f"{PREFIX}*"))
    if keys:
        sync.delete(*keys)


def _state(sync: redis.Redis) -> dict[str, tuple[str, Any, int]]:
    state: dict[str, tuple[str, Any, int]] = {}
    for raw in sync.scan_iter(f"{PREFIX}*"):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        kind_raw = sync.type(key)
        kind = kind_raw.decode() if isinstance(kind_raw, bytes) else str(kind_raw)
        value: Any = (
            sync.get(key)
            if kind == "string"
            else sync.zrange(key, 0, -1, withscores=True)
            if kind == "zset"
            else sync.hgetall(key)
        )
        state[key] = (kind, value, int(sync.pttl(key)))
    return state


def _run(
    sync: redis.Redis, script: str, batches: list[list[Op]]
) -> tuple[list[Any], dict[str, tuple[str, Any, int]]]:
    _clear(sync)
    sync.hset(WRONG, "x", "1")
    replies = []
    for batch in batches:
        keys = [k for ks, _ in batch for k in ks]
        args = [a for _, a in batch]
        replies.append(sync.eval(script, len(keys), *keys, *args))
    return replies, _state(sync)


def _same_state(
    got: dict[str, tuple[str, Any, int]], want: dict[str, tuple[str, Any, int]]
) -> None:
    assert got.keys() == want.keys()
    for key, (kind, value, ttl) in want.items():
        assert got[key][:2] == (kind, value), key
        # TTLs are read a few ms apart in the two runs; a different writer differs by ≥ 1 s
        assert abs(got[key][2] - ttl) <= 250, (key, got[key][2], ttl)


#: A lease released in the batch frees its slot for a later check of the same batch.
RELEASE_THEN_CHECK = [
    ([LEASES[0]], f"c 1 {T0} 0 1 30000000 m0 -"),
    ([LEASES[0]], "r 1 m0"),
    ([LEASES[0]], f"c 1 {T0} 0 1 30000000 m1 -"),
]
#: A lease that expires while the batch's clock moves on no longer counts.
EXPIRED_BY_A_LATER_CLOCK = [
    ([LEASES[0]], f"c 1 {T0} 0 1 1000 m0 -"),
    ([LEASES[0]], f"c 1 {T0 + 3_000_000} 0 1 1000 m1 -"),
]


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(_ops(), min_size=1, max_size=3))
@example(batches=[RELEASE_THEN_CHECK])
@example(batches=[EXPIRED_BY_A_LATER_CLOCK])
def test_the_script_answers_and_leaves_keys_as_one_operation_at_a_time(
    sync: redis.Redis, batches: list[list[Op]]
) -> None:
    want_replies, want_state = _run(sync, REFERENCE_LUA, batches)
    got_replies, got_state = _run(sync, LIMITER_LUA, batches)
    _clear(sync)
    assert got_replies == want_replies
    _same_state(got_state, want_state)


def test_a_batch_of_one_callers_requests_reads_and_writes_each_key_once(
    sync: redis.Redis,
) -> None:
    """Twelve admissions and twelve releases on one caller's keys: the GCRA keys are read and
    written once each, the lease set cleared and counted once, its TTL set once."""
    _clear(sync)
    keys = [TATS[0], TATS[1], LEASES[0]]
    check = f"c 3 {T0} 2 1000 1000000 1 1000 1000000 1 100 30000000"
    held = [([LEASES[0]], f"r 1 old{i}") for i in range(12)]
    for i in range(12):
        sync.zadd(LEASES[0], {f"old{i}": T0 + 10**9})
    batch = [(keys, f"{check} m{i} -") for i in range(12)] + held
    sync.config_resetstat()
    replies = sync.eval(
        LIMITER_LUA, 3 * 12 + 12, *[k for ks, _ in batch for k in ks], *[a for _, a in batch]
    )
    calls = {
        name.removeprefix("cmdstat_"): int(stat["calls"])
        for name, stat in sync.info("commandstats").items()
    }
    state = _state(sync)
    _clear(sync)
    assert [r.split()[0] for r in replies[:12]] == [b"1"] * 12  # all admitted
    assert calls["get"] == 2
    assert calls["set"] == 2
    assert calls["zremrangebyscore"] == 1
    assert calls["zcard"] == 1
    assert calls["zadd"] == 12
    assert calls["zrem"] == 12
    assert calls["pexpire"] == 1
    assert sorted(m for m, _ in state[LEASES[0]][1]) == sorted(f"m{i}".encode() for i in range(12))
