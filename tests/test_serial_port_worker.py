"""The serial I/O thread without ROS: it owns the port, reconnects by itself, never lets a
caller block on the port, and finishes the exit path before closing."""

from __future__ import annotations

import os
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ros_harness import wait_for

from delivery_robot.diff_drive import DiffDriveGeometry
from delivery_robot.firmware_emulator import FirmwareEmulator
from delivery_robot.motor_controller_link import LinkConfig, LinkState, MotorControllerLink
from delivery_robot.serial_port_worker import SerialPortWorker
from delivery_robot.serial_protocol import (
    PROTOCOL_VERSION,
    FirmwareVersion,
    LockAction,
    LockStatus,
    encode_frame,
)

GEOMETRY = DiffDriveGeometry(0.12, 0.48, 4096, 40.0)


@pytest.fixture
def make_worker() -> Iterator[Callable[..., tuple[SerialPortWorker, list[str]]]]:
    workers: list[SerialPortWorker] = []

    def make(path: Path, config: LinkConfig | None = None) -> tuple[SerialPortWorker, list[str]]:
        logs: list[str] = []
        link = MotorControllerLink(GEOMETRY, config, now=time.monotonic())
        worker = SerialPortWorker(link, str(path), reconnect_period=0.05, log=logs.append)
        worker.start()
        workers.append(worker)
        return worker, logs

    yield make
    for worker in workers:
        worker.close(timeout=0.5)


def state(worker: SerialPortWorker) -> LinkState:
    return worker.call(lambda link, _now: link.state, wake=False)


def test_waits_for_the_port_reconnects_and_drives(
    tmp_path: Path, make_worker: Callable[..., tuple[SerialPortWorker, list[str]]]
) -> None:
    path = tmp_path / "ttyMCU"
    worker, logs = make_worker(path)
    wait_for(lambda: any("does not exist" in line for line in logs), 2.0, "a missing port")
    with FirmwareEmulator(path) as emulator:
        wait_for(lambda: state(worker) is LinkState.READY, 3.0, "the handshake")
        worker.call(lambda link, now: link.set_motors(True, now))
        worker.call(lambda link, now: link.set_twist(0.5, 0.0, now))
        wait_for(lambda: emulator.snapshot().moving, 3.0, "driving")
        emulator.unplug()
        wait_for(lambda: state(worker) is LinkState.DISCONNECTED, 2.0, "the unplug")
        emulator.replug()
        replugged = time.monotonic()
        wait_for(lambda: (emulator.snapshot().last_velocity_command_at or 0.0) > replugged, 2.0,
                 "control after the replug")
        worker.call(lambda link, now: link.set_twist(0.5, 0.0, now))  # fresh: it timed out
        wait_for(lambda: emulator.snapshot().moving, 3.0, "driving again")
    assert sum("does not exist" in line for line in logs) <= 2  # once per outage, not per try


def test_a_device_that_never_answers_is_reopened_quietly(
    tmp_path: Path, make_worker: Callable[..., tuple[SerialPortWorker, list[str]]]
) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = tmp_path / "ttySilent"
    path.symlink_to(os.ttyname(slave))
    try:
        worker, logs = make_worker(path, LinkConfig(link_timeout=0.1))
        connects = lambda: worker.call(lambda link, now: link.status(now).connects, wake=False)  # noqa: E731
        wait_for(lambda: connects() >= 5, 5.0, "several reopen attempts")
        assert len(logs) <= 3
        assert state(worker) in (LinkState.HANDSHAKE, LinkState.DISCONNECTED)
    finally:
        os.close(master)
        os.close(slave)


def test_callers_never_block_when_the_controller_stops_reading(
    tmp_path: Path, make_worker: Callable[..., tuple[SerialPortWorker, list[str]]]
) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = tmp_path / "ttyStuck"
    path.symlink_to(os.ttyname(slave))
    try:
        worker, _ = make_worker(path, LinkConfig(link_timeout=60.0))
        wait_for(lambda: state(worker) is LinkState.HANDSHAKE, 2.0, "the port to open")
        hello = encode_frame(FirmwareVersion(PROTOCOL_VERSION, 1, 0, 0, 1), 0)
        worker.call(lambda link, now: link.on_bytes(hello, now))  # as if it had answered once
        worker.call(lambda link, now: link.set_motors(True, now))
        slowest = 0.0
        for index in range(5000):  # 80 kB: far more than a pty buffers; nobody reads it
            started = time.monotonic()
            worker.call(lambda link, now, index=index: link.set_twist(index * 1e-4, 0.0, now))
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 0.1
        assert worker.tx_dropped_bytes > 0  # stale commands dropped, not piled up
        assert worker.running
    finally:
        os.close(master)
        os.close(slave)


def test_close_finishes_the_exit_path_first(
    tmp_path: Path, make_worker: Callable[..., tuple[SerialPortWorker, list[str]]]
) -> None:
    path = tmp_path / "ttyMCU"
    with FirmwareEmulator(path) as emulator:
        worker, _ = make_worker(path)
        wait_for(lambda: state(worker) is LinkState.READY, 3.0, "the handshake")
        assert worker.call(lambda link, now: link.request_lock(LockAction.UNLOCK, now))
        wait_for(lambda: emulator.snapshot().lock_status is LockStatus.UNLOCKED, 2.0, "unlock")
        worker.call(lambda link, now: link.set_motors(True, now))
        wait_for(lambda: emulator.snapshot().motors_enabled, 2.0, "motors on")
        worker.call(lambda link, now: link.secure(now))
        worker.close()
        assert not worker.running
        snapshot = emulator.snapshot()
        assert not snapshot.motors_enabled
        assert snapshot.lock_status is LockStatus.LOCKED


def test_bad_reconnect_period_is_refused() -> None:
    link = MotorControllerLink(GEOMETRY, now=0.0)
    with pytest.raises(ValueError, match="reconnect_period"):
        SerialPortWorker(link, "/dev/null", reconnect_period=0.0)
