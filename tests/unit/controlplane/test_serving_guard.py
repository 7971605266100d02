"""The connection guard's bookkeeping on fake connections (no sockets, no event loop)."""

from __future__ import annotations

from controlplane.api.serving import ConnectionGuard, ConnectionLimits


class FakeConnection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.guard_phase = "new"
        self.closed = False

    def guard_close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return self.name


def guard(max_connections: int) -> tuple[ConnectionGuard, list[str]]:
    reasons: list[str] = []
    return ConnectionGuard(
        ConnectionLimits(max_connections=max_connections), reasons.append
    ), reasons


def test_half_open_then_idle_connections_make_room_oldest_first() -> None:
    g, reasons = guard(3)
    idle, busy, half_open = FakeConnection("idle"), FakeConnection("busy"), FakeConnection("half")
    for conn in (idle, busy, half_open):
        g.opened(conn)
    for conn in (idle, busy):
        g.request_started(conn)
    g.request_finished(idle, next_begun=False)
    assert (g.open, g.pending, g.busy, g.idle) == (3, 1, 1, 1)

    first, second, third = FakeConnection("1"), FakeConnection("2"), FakeConnection("3")
    g.opened(first)
    assert half_open.closed and not idle.closed and not busy.closed
    g.request_started(first)  # the newcomer sends its request: busy
    g.opened(second)
    assert idle.closed and not busy.closed
    assert reasons == ["evicted", "evicted"]
    g.request_started(second)
    # Only requests in flight now: the newcomer stays, its request will be refused.
    g.opened(third)
    assert not busy.closed and g.open == 4
    assert not g.has_room(third)
    # A connection that holds a request keeps its slot for the requests it pipelined.
    assert g.has_room(busy)
    g.closed(third)
    g.request_finished(busy, next_begun=False)
    assert g.has_room(FakeConnection("4"))
    assert (g.open, g.busy, g.idle, g.pending) == (3, 2, 1, 0)


def test_a_closed_connection_is_forgotten_once() -> None:
    g, _ = guard(10)
    conn = FakeConnection("c")
    g.opened(conn)
    g.request_started(conn)
    g.drop(conn, "body_timeout")
    g.closed(conn)  # connection_lost after the guard closed it
    assert (g.open, g.busy) == (0, 0) and conn.closed
    never_opened = FakeConnection("tls-handshake-failed")
    g.closed(never_opened)
    assert g.open == 0


def test_a_request_begun_on_an_idle_connection_makes_it_pending_again() -> None:
    g, _ = guard(10)
    conn = FakeConnection("c")
    g.opened(conn)
    g.request_started(conn)
    g.request_finished(conn, next_begun=False)
    assert (g.idle, g.pending) == (1, 0)
    g.request_begun(conn)
    assert (g.idle, g.pending) == (0, 1)
    g.request_started(conn)
    g.request_finished(conn, next_begun=True)  # a pipelined request already began
    assert (g.idle, g.pending, g.busy) == (0, 1, 0)
