"""This replica's estimate of Redis's clock, for the limiter script's deadline (pure).

A limiter call the gateway stopped waiting for must not count when Redis runs it later (a
stopped or busy Redis runs every queued script when it resumes): each call carries a
deadline on Redis's clock, and the script changes nothing after it (``ratelimit_lua``).

The offset (Redis's clock minus ours) comes from the answers themselves, NTP-style: a call
sent at ``sent`` and answered at ``received`` (our clock) that ran at ``redis_now`` (Redis's)
puts the offset within half its round trip of ``redis_now - (sent + received) / 2``. The
fastest recent round trip gives the best estimate; after ``refresh_us`` any answer replaces
it (so a drifting or stepped clock is followed), and an answer that says "expired" always
does. The deadline adds the estimate's round trip and a millisecond to the budget, so it is
never earlier than the real one: a call is never refused for running on time.
"""

from __future__ import annotations

from dataclasses import dataclass

MARGIN_US = 1000


@dataclass(slots=True)
class ClockOffset:
    refresh_us: int = 10_000_000
    offset_us: int | None = None
    rtt_us: int = 0
    at_us: int = 0

    def learn(
        self, redis_now_us: int, sent_us: int, received_us: int, *, force: bool = False
    ) -> None:
        rtt = received_us - sent_us
        if (
            force
            or self.offset_us is None
            or rtt <= self.rtt_us
            or received_us - self.at_us > self.refresh_us
        ):
            self.offset_us = redis_now_us - (sent_us + received_us) // 2
            self.rtt_us = rtt
            self.at_us = received_us

    def deadline(self, sent_us: int, budget_us: int) -> int | None:
        """The latest Redis time at which a call sent at ``sent_us`` may still count."""
        if self.offset_us is None:
            return None
        return sent_us + self.offset_us + budget_us + self.rtt_us + MARGIN_US
