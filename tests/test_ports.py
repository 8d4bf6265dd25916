"""tests.support.ports: the one free-port helper of tests, benchmarks and CI."""

from __future__ import annotations

import errno
import socket

import pytest

from tests.support.ports import PortTaken, free_port, on_free_port, says_port_taken


def test_free_port_can_be_bound_on_loopback():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname()[1] == port


def test_a_port_taken_between_pick_and_bind_is_picked_again():
    held, tried = [], []

    def start(port: int) -> str:
        tried.append(port)
        if len(tried) == 1:  # another process binds the chosen port first
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            s.listen()
            held.append(s)
            try:
                socket.create_server(("127.0.0.1", port))
            except OSError as e:
                assert e.errno == errno.EADDRINUSE
                raise PortTaken(port, str(e)) from e
        return "up"

    try:
        port, result = on_free_port(start)
    finally:
        for s in held:
            s.close()
    assert result == "up" and len(tried) == 2 and port == tried[1] != tried[0]


def test_other_errors_are_not_retried_and_a_port_always_taken_gives_up():
    calls = []

    def broken(port: int):
        calls.append(port)
        raise OSError(errno.EACCES, "permission denied")

    with pytest.raises(OSError, match="permission denied"):
        on_free_port(broken)
    assert len(calls) == 1

    def always_taken(port: int):
        calls.append(port)
        raise PortTaken(port)

    with pytest.raises(PortTaken):
        on_free_port(always_taken, attempts=3)
    assert len(calls) == 1 + 3


@pytest.mark.parametrize(
    "text, taken",
    [
        (
            "ERROR: [Errno 98] error while attempting to bind on address: address already in use",
            True,
        ),
        ("OSError: Cannot find empty port in range: 7860-7860.", True),
        ("OSError: [Errno 13] Permission denied", False),
        ("", False),
    ],
)
def test_a_server_saying_its_port_is_taken_is_recognised(text, taken):
    assert says_port_taken(text) is taken
