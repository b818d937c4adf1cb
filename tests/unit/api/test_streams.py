"""Replays and live streams over a real socket: no thread held while waiting, caps, lifetimes, shutdown."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from k2.api.deps import Services
from tests.unit.api.conftest import LiveServer

SLOW = {"symbols": "BHP", "start": "2014-03-10T23:00:00Z", "end": "2014-03-10T23:30:00Z", "speed": "0.1"}


def _services(live: LiveServer) -> Services:
    svc = live.app.state.k2
    assert isinstance(svc, Services)
    return svc


def _wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@contextlib.contextmanager
def _open_streams(
    url: str, count: int, params: dict[str, str], **headers: str
) -> Iterator[list[httpx.Response]]:
    with contextlib.ExitStack() as stack:
        responses = []
        for _ in range(count):
            client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
            response = stack.enter_context(client.stream("GET", "/v1/replay", params=params, headers=headers))
            assert response.status_code == 200, response.read()[:300]
            responses.append(response)
        yield responses


def test_slow_replays_hold_no_thread_and_end_with_their_clients(
    make_server: Callable[..., LiveServer],
) -> None:
    # More paced replays than the thread pool has threads (40): once, each slept in a thread and
    # /v1/latest, /health and /metrics stopped answering.
    live = make_server(max_streams_per_key=100, max_streams=100, rate_limit_per_minute=100_000)
    with _open_streams(live.url, 45, SLOW):
        assert _services(live).streams.open_streams() == 45
        started = time.monotonic()
        with httpx.Client(base_url=live.url, timeout=5) as http:
            assert http.get("/v1/latest", params={"symbols": "BHP"}).status_code == 200
            assert http.get("/metrics").status_code == 200
        assert time.monotonic() - started < 5
    # The clients are gone: their streams end within a second or so, not when the replay would.
    assert _wait_for(lambda: _services(live).streams.open_streams() == 0, 5.0)


def test_the_speed_floor_refuses_a_replay_that_would_never_finish(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server()
    with httpx.Client(base_url=live.url, timeout=5) as http:
        response = http.get("/v1/replay", params={**SLOW, "speed": "1e-9"})
    assert response.status_code == 400 and "speed" in response.json()["detail"]
    assert _services(live).streams.open_streams() == 0


def test_streams_per_key_are_capped_and_slots_come_back(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(max_streams_per_key=2, api_keys=["a", "b"])
    with (
        _open_streams(live.url, 2, SLOW, **{"X-API-Key": "a"}),
        httpx.Client(base_url=live.url, timeout=5) as http,
    ):
        third = http.get("/v1/replay", params=SLOW, headers={"X-API-Key": "a"})
        assert third.status_code == 429 and third.json()["error"] == "too_many_streams"
        assert "api.max_streams_per_key" in third.json()["detail"] and int(third.headers["Retry-After"]) >= 1
        with http.stream("GET", "/v1/replay", params=SLOW, headers={"X-API-Key": "b"}) as other:
            assert other.status_code == 200  # another key has its own slots
    assert _wait_for(lambda: _services(live).streams.open_streams() == 0, 5.0)
    with (
        httpx.Client(base_url=live.url, timeout=5) as http,
        http.stream("GET", "/v1/replay", params=SLOW, headers={"X-API-Key": "a"}) as again,
    ):
        assert again.status_code == 200


def test_a_failed_replay_gives_its_slot_back(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(max_streams_per_key=1)
    with httpx.Client(base_url=live.url, timeout=5) as http:
        for _ in range(3):
            assert http.get("/v1/replay", params={**SLOW, "kinds": "nope"}).status_code == 400
        assert _services(live).streams.open_streams() == 0


def test_a_replay_ends_at_its_maximum_lifetime(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(stream_max_s=1.5)
    started = time.monotonic()
    with httpx.Client(base_url=live.url, timeout=10) as http:
        response = http.get("/v1/replay", params={**SLOW, "stream": "sse"})
    assert response.status_code == 200 and time.monotonic() - started < 5
    assert response.text.startswith("event: trade")
    assert response.text.rstrip().endswith('data: {"closed": "api.stream_max_s"}')
    assert _services(live).streams.open_streams() == 0


def test_sigterm_ends_the_server_despite_open_streams(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(shutdown_grace_s=1.0, max_streams_per_key=10)
    with _open_streams(live.url, 5, SLOW) as responses:
        bodies = [response.iter_bytes() for response in responses]
        for body in bodies:
            next(body)  # each stream is under way, then waits ~10 s for its next row
        took = live.stop()
        assert not live.thread.is_alive() and took < 6
        for body in bodies:  # cut, not completed: a client can tell
            with pytest.raises(httpx.HTTPError):
                list(body)


def test_the_lease_table_only_holds_open_callers() -> None:
    from k2.api.errors import TooManyStreamsError
    from k2.api.streams import StreamSlots

    slots = StreamSlots(per_key=1, total=2, max_s=60)
    a, b = slots.acquire("a"), slots.acquire("b")
    with pytest.raises(TooManyStreamsError, match="max_streams_per_key"):
        slots.acquire("a")
    with pytest.raises(TooManyStreamsError, match=r"api\.max_streams\b"):
        slots.acquire("c")
    a.release()
    a.release()  # idempotent
    b.release()
    assert slots.open_streams() == 0 and slots._open == {}
