"""The Azure backends in force: one ``UpstreamClient`` and one credential each, their circuit
breakers (``breaker``) and the choice of a backend for a new object (``routing``).

The single ``upstream.endpoint`` form is one backend named ``default``. With ONE backend
there is no breaker: there is nothing to fail over to, and Azure's own answer (its 429 and
``Retry-After``, its 5xx) is relayed as it is.

* ``choose(api_version)``: a new object's backend (``routing.choose`` over the available
  ones, by priority then weight; a half-open backend's pick is its probe). Available: its
  breaker lets it take one, and its credential is usable now (an Entra backend whose token
  has expired, its endpoint down, takes no new object: the object would be created nowhere
  and the caller told 503, while another backend could hold it). Requests on objects that
  live on such a backend still go there (``get``) and get the credential's 503
  ``upstream_credential_unavailable``. When no backend has a usable credential, the choice
  is made among those the breakers allow: the credential then answers (a fetch in flight may
  yet bring a token) or gives its own 503 and ``Retry-After``. None available: 503
  ``no_upstream_available`` with ``Retry-After`` = the soonest reopening, nothing sent.
* ``preferred(api_version)``: where a request that names no object goes (a list without a
  cursor): the lowest priority group's heaviest available backend, else the choice of
  ``choose``'s fallback (the first configured).
* ``observe(...)``: the forwarder feeds each upstream answer (status, ``Retry-After``) or
  its absence (timeout, unreachable) to that backend's breaker, and to the metrics hook.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.errors import ServiceUnavailableError
from gateway.upstream import routing
from gateway.upstream.breaker import Breaker, BreakerPolicy, Failure, State
from gateway.upstream.client import UpstreamClient
from gateway.upstream.credentials import UpstreamCredential

#: ``on_answer(backend, status or None, failure or None)``.
AnswerHook = Callable[[str, int | None, Failure | None], None]


@dataclass(eq=False)
class Backend:
    name: str
    client: UpstreamClient
    credential: UpstreamCredential
    weight: int = 1
    priority: int = 0
    api_versions: frozenset[str] = frozenset()
    breaker: Breaker | None = None


def no_upstream_available(retry_after_s: float) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "No upstream resource can take new objects right now; retry later.",
        code="no_upstream_available",
        headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))},
    )


class Backends:
    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
        on_answer: AnswerHook | None = None,
    ) -> None:
        if not backends:
            raise ValueError("at least one backend")
        self.all = tuple(backends)
        self.by_name = {b.name: b for b in self.all}
        self.first = self.all[0]
        self.clock = clock
        self.draw = draw
        self.on_answer = on_answer
        if len(self.all) > 1:
            for backend in self.all:
                backend.breaker = Breaker(policy)

    def get(self, name: str | None) -> Backend:
        """The backend named (an object's home); None: the first (old records, written before
        there were several, mean the first). A name no longer configured never gets here
        (``ownership.lookup`` asks the backends instead of guessing): ``KeyError``."""
        if name is None:
            return self.first
        return self.by_name[name]

    def _candidates(self, now: float, api_version: str) -> list[routing.Candidate]:
        allowed = {b.name: b.breaker is None or b.breaker.available(now) for b in self.all}
        credentialed = {b.name: b.credential.usable() for b in self.all}
        # No backend of the version with a usable credential: the breakers decide alone (the
        # credential gives its own answer, perhaps a token fetched meanwhile).
        if not any(
            allowed[b.name] and credentialed[b.name]
            for b in self.all
            if not b.api_versions or api_version in b.api_versions
        ):
            credentialed = dict.fromkeys(credentialed, True)
        return [
            routing.Candidate(
                b.name,
                b.weight,
                b.priority,
                b.api_versions,
                allowed[b.name] and credentialed[b.name],
                now if b.breaker is None else b.breaker.reopens_at(now),
            )
            for b in self.all
        ]

    def choose(self, api_version: str) -> tuple[Backend, bool]:
        """A new object's backend and whether it is that backend's half-open probe."""
        if len(self.all) == 1:
            return self.first, False
        now = self.clock()
        candidates = self._candidates(now, api_version)
        picked = routing.choose(candidates, api_version, self.draw())
        if picked is None:
            soonest = routing.soonest(candidates, api_version)
            raise no_upstream_available(1.0 if soonest is None else soonest - now)
        backend = self.by_name[picked.name]
        assert backend.breaker is not None
        return backend, backend.breaker.take_probe(now)

    def preferred(self, api_version: str) -> Backend:
        if len(self.all) == 1:
            return self.first
        picked = routing.preferred(self._candidates(self.clock(), api_version), api_version)
        return self.first if picked is None else self.by_name[picked.name]

    # The ownership middleware's ``Router``: backends by name.
    def new_home(self, api_version: str) -> tuple[str, bool]:
        backend, probe = self.choose(api_version)
        return backend.name, probe

    def list_home(self, api_version: str) -> str:
        return self.preferred(api_version).name

    def home_of(self, name: str | None) -> str:
        return self.get(name).name

    def observe(
        self,
        backend: Backend,
        *,
        status: int | None,
        retry_after: str | None = None,
        failure: Failure | None = None,
        probe: bool = False,
    ) -> None:
        if backend.breaker is not None:
            backend.breaker.record(
                self.clock(), status=status, retry_after=retry_after, failure=failure, probe=probe
            )
        if self.on_answer is not None:
            self.on_answer(backend.name, status, failure)

    def release_probe(self, backend: Backend) -> None:
        """The probe sent there got no answer of the backend's (the caller left, our pool was
        full): its slot is free for the next new object."""
        if backend.breaker is not None:
            backend.breaker.probe_until = None

    def states(self) -> dict[str, State]:
        """Each backend's breaker state (``closed`` without a breaker)."""
        now = self.clock()
        return {b.name: "closed" if b.breaker is None else b.breaker.state(now) for b in self.all}

    def start(self) -> None:
        for backend in self.all:
            backend.credential.start()

    async def aclose(self) -> None:
        for backend in self.all:
            await backend.credential.aclose()
            await backend.client.aclose()
