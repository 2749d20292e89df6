"""sd_notify and the watchdog, against real AF_UNIX datagram sockets the tests create."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.bot.notify import ActivityTracker, SdNotifier, Watchdog, watchdog_interval


class Receiver:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Receiver]]:
    path = str(tmp_path / "notify.sock")
    r = Receiver(path)
    yield path, r
    r.sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[str, Receiver]]:
    name = f"wyeli-test-{uuid.uuid4().hex}"
    r = Receiver(b"\0" + name.encode())
    yield "@" + name, r
    r.sock.close()


def test_notifier_without_notify_socket_is_a_silent_no_op():
    n = SdNotifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog_ping() is False
    assert n.errors == 0


def test_ready_status_and_stopping_arrive_as_single_datagrams(receiver):
    path, r = receiver
    n = SdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert n.ready("warm-up done: 15 streams")
    assert n.status("3 signals today")
    assert n.stopping()
    assert r.drain() == [
        "READY=1\nSTATUS=warm-up done: 15 streams",
        "STATUS=3 signals today",
        "STOPPING=1\nSTATUS=shutting down",
    ]
    assert n.sent == 3


def test_abstract_namespace_socket_receives_ready(abstract_receiver):
    name, r = abstract_receiver
    assert name.startswith("@")
    assert SdNotifier(name).ready()
    assert r.drain() == ["READY=1"]


def test_status_text_with_newlines_cannot_inject_extra_assignments(receiver):
    path, r = receiver
    SdNotifier(path).status("ok\nREADY=1\nWATCHDOG=trigger")
    (msg,) = r.drain()
    assert msg.count("\n") == 0
    assert msg.startswith("STATUS=ok READY=1")


def test_send_to_missing_socket_is_counted_not_raised(tmp_path):
    n = SdNotifier(str(tmp_path / "nobody-listens.sock"))
    assert n.ready() is False
    assert n.errors == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "garbage"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid_only(env, expected):
    assert watchdog_interval(env) == expected


def test_activity_tracker_turns_unhealthy_after_max_silence_and_recovers_on_touch():
    now = [100.0]
    t = ActivityTracker(90.0, clock=lambda: now[0])
    assert t.is_healthy()  # starts with a full grace period
    now[0] += 90.0
    assert t.is_healthy()
    now[0] += 0.5
    assert not t.is_healthy()
    t.touch()
    assert t.is_healthy()
    with pytest.raises(ValueError):
        ActivityTracker(0)


def test_watchdog_tick_pings_only_while_healthy_and_reports_the_stall_once(receiver):
    path, r = receiver
    healthy = [True]
    notifier = SdNotifier(path)
    wd = Watchdog(notifier, lambda: healthy[0], interval_s=1.0)
    assert not wd.tick()  # nothing before READY=1: systemd has not armed the watchdog yet
    notifier.ready()
    assert wd.tick()
    healthy[0] = False
    assert not wd.tick()
    assert not wd.tick()
    healthy[0] = True
    assert wd.tick()
    assert r.drain() == [
        "READY=1",
        "WATCHDOG=1",
        "STATUS=stalled: no market data, watchdog pings withheld",
        "STATUS=running",
        "WATCHDOG=1",
    ]
    assert (wd.pings, wd.skipped) == (2, 2)


def test_watchdog_treats_a_raising_probe_as_unhealthy(receiver):
    path, r = receiver

    def probe() -> bool:
        raise RuntimeError("boom")

    notifier = SdNotifier(path)
    notifier.ready()
    wd = Watchdog(notifier, probe, interval_s=1.0)
    assert not wd.tick()
    assert "WATCHDOG=1" not in r.drain()


def test_watchdog_is_inactive_without_socket_or_interval(receiver):
    path, _ = receiver
    assert not Watchdog(SdNotifier(None), lambda: True, interval_s=1.0).active
    assert not Watchdog(SdNotifier(path), lambda: True, interval_s=0).active


async def test_watchdog_without_systemd_starts_no_task():
    wd = Watchdog(SdNotifier(None), lambda: True, interval_s=0.01)
    assert wd.start() is None
    await wd.stop()


async def test_watchdog_task_pings_while_frames_flow_and_stops_when_the_feed_stalls(receiver, monkeypatch):
    """Full path: READY after warm-up, WATCHDOG=1 while data flows, no pings once it stalls, STOPPING at the end."""
    path, r = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # 20 ms -> a check every 10 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SdNotifier.from_env()
    flowing_checks = 5
    calls = 0
    stalled_checks_seen = asyncio.Event()

    def data_flowing() -> bool:
        # "frames arrive" for the first 5 checks, then the feed stalls; count checks instead of timing them
        nonlocal calls
        calls += 1
        if calls >= flowing_checks + 4:
            stalled_checks_seen.set()
        return calls <= flowing_checks

    wd = Watchdog(notifier, data_flowing)
    assert not wd.tick() and calls == 0  # before READY=1 the probe is not even consulted
    notifier.ready("warm-up done")
    assert wd.interval_s == pytest.approx(0.01)
    task = wd.start()
    assert task is not None
    await asyncio.wait_for(stalled_checks_seen.wait(), 10)
    await wd.stop()
    notifier.stopping()
    assert task.done()

    messages = r.drain()
    assert messages[0] == "READY=1\nSTATUS=warm-up done"
    assert messages[-1] == "STOPPING=1\nSTATUS=shutting down"
    body = messages[1:-1]
    assert body.count("WATCHDOG=1") == flowing_checks  # one ping per healthy check, none after the stall
    last_ping = max(i for i, m in enumerate(body) if m == "WATCHDOG=1")
    assert body[last_ping + 1].startswith("STATUS=stalled")
    assert wd.skipped >= 3
