"""The host side of the serial protocol, against the firmware model with simulated time (no
port, no threads): handshake, velocity stream, acked commands and their retries, e-stop latch,
odometry, link quality, and the exit path."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable

import pytest

from delivery_robot.diff_drive import DiffDriveGeometry
from delivery_robot.firmware_emulator import (
    CommandOutcome,
    EmulatorConfig,
    FirmwareModel,
    LinkFaults,
)
from delivery_robot.motor_controller_link import (
    BatteryUpdated,
    CommandDone,
    CompartmentChanged,
    EstopChanged,
    LinkConfig,
    LinkEvent,
    LinkState,
    LinkStateChanged,
    MotorControllerLink,
    OdometryUpdated,
)
from delivery_robot.serial_protocol import (
    FirmwareVersion,
    Frame,
    FrameParser,
    Heartbeat,
    LockAction,
    LockCommand,
    LockStatus,
    Message,
    MotorEnable,
    Request,
    SequenceCounter,
    WheelVelocityCommand,
    encode_frame,
)

GEOMETRY = DiffDriveGeometry(wheel_radius=0.1, track_width=0.5, ticks_per_rev=4096,
                             max_wheel_speed=40.0)
STEP = 0.001  # s of simulated time per wire exchange


class Bench:
    """The link and the firmware model joined by a simulated wire, 1 ms per step.

    `host_filter` may drop or damage host->MCU bytes; `mcu_filter` the other way."""

    def __init__(self, config: LinkConfig | None = None, model: FirmwareModel | None = None,
                 connect: bool = True) -> None:
        self.now = 0.0
        self.link = MotorControllerLink(GEOMETRY, config, now=0.0, seq_start=100)
        self.model = model or FirmwareModel(EmulatorConfig(), now=0.0)
        self.mcu_parser = FrameParser()
        self.mcu_seq = SequenceCounter(0)
        self.sent: list[Frame] = []  # every frame the host put on the wire, decoded
        self.events: list[LinkEvent] = []
        self.host_filter: Callable[[bytes], bytes] = lambda data: data
        self.mcu_filter: Callable[[bytes], bytes] = lambda data: data
        self.plugged = False
        if connect:
            self.plug()

    def plug(self) -> None:
        self.plugged = True
        self.link.on_connected(self.now)

    def unplug(self) -> None:
        self.plugged = False
        self.link.on_disconnected(self.now, "unplugged")

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + STEP, 6)
            self.exchange()

    def run_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        end = self.now + timeout
        while not condition():
            if self.now > end:
                pytest.fail(f"condition not reached within {timeout} s of simulated time")
            self.now = round(self.now + STEP, 6)
            self.exchange()

    def exchange(self) -> None:
        now = self.now
        self.model.step(now)
        self.link.tick(now)
        host_bytes = self.link.take_outgoing()
        check = FrameParser()
        self.sent += check.feed(host_bytes)
        if self.plugged:
            for frame in self.mcu_parser.feed(self.host_filter(host_bytes)):
                self.model.receive(frame, now)
        mcu_bytes = b"".join(encode_frame(m, self.mcu_seq.next())
                             for m in self.model.take_outbox())
        if self.plugged and mcu_bytes:
            self.link.on_bytes(self.mcu_filter(mcu_bytes), now)
        self.events += self.link.take_events()

    def sent_messages(self, kind: type[Message]) -> list[Frame]:
        return [frame for frame in self.sent if isinstance(frame.message, kind)]

    def done(self) -> list[CommandDone]:
        return [event for event in self.events if isinstance(event, CommandDone)]

    def command(self, submit: Callable[[MotorControllerLink, float], int]) -> CommandDone:
        ticket = submit(self.link, self.now)
        self.run_until(lambda: any(done.ticket == ticket for done in self.done()))
        return next(done for done in self.done() if done.ticket == ticket)


def ready_bench(config: LinkConfig | None = None) -> Bench:
    bench = Bench(config)
    bench.run_until(lambda: bench.link.state is LinkState.READY)
    bench.run_until(lambda: bench.link.pending_commands == 0)  # the MOTOR_ENABLE(0) at connect
    bench.events.clear()
    return bench


def active_bench() -> Bench:
    bench = ready_bench()
    done = bench.command(lambda link, now: link.set_motors(True, now))
    assert done.ok, done
    return bench


def test_handshake_asks_for_the_version_first_and_sends_no_command_before_it() -> None:
    bench = Bench(connect=False)
    bench.link.set_motors(True, 0.0)
    bench.link.set_twist(1.0, 0.0, 0.0)
    assert bench.link.take_outgoing() == b""  # no port: nothing queued
    bench.plug()
    first = FrameParser().feed(bench.link.take_outgoing())
    assert first[0].message == Request(0x85)  # FIRMWARE_VERSION, as pyserial flushed the hello
    assert {frame.message for frame in first[1:]} >= {Request(0x83), Request(0x84), Request(0x82)}
    assert not any(isinstance(f.message, WheelVelocityCommand | MotorEnable) for f in first)
    bench.run_until(lambda: bench.link.state is LinkState.READY)
    assert bench.link.firmware == FirmwareVersion(1, 1, 0, 0, 0x00C0FFEE)
    states = [e.state for e in bench.events if isinstance(e, LinkStateChanged)]
    assert states == [LinkState.HANDSHAKE, LinkState.READY]
    assert bench.link.lock_status is LockStatus.LOCKED
    assert bench.link.door_open is False
    assert bench.link.estop_active is False
    assert any(isinstance(e, BatteryUpdated) for e in bench.events)
    bench.run(0.05)
    assert bench.model.motors_enabled  # the enable queued before the port opened went out


def test_version_request_is_retried_until_answered() -> None:
    bench = Bench(connect=False)
    dropping = True
    bench.host_filter = lambda data: b"" if dropping else data
    bench.plug()
    bench.run(0.35)
    assert bench.link.state is LinkState.HANDSHAKE
    requests = [f for f in bench.sent_messages(Request) if f.message == Request(0x85)]
    assert len(requests) == 4  # at 0, 0.1, 0.2 and 0.3 s
    dropping = False
    bench.run(0.1)
    assert bench.link.state is LinkState.READY


def test_incompatible_firmware_gets_no_commands() -> None:
    bench = Bench(connect=False)
    bench.link.set_motors(True, 0.0)
    bench.plug()
    bench.link.on_bytes(encode_frame(FirmwareVersion(2, 3, 0, 0, 1), 0), bench.now)
    assert bench.link.state is LinkState.INCOMPATIBLE
    bench.sent.clear()
    bench.link.set_twist(1.0, 0.0, bench.now)
    bench.run(1.2)
    assert not bench.sent_messages(WheelVelocityCommand)
    assert not bench.sent_messages(MotorEnable)
    done = bench.done()
    assert done
    assert not done[0].ok
    assert bench.link.next_deadline() == math.inf  # nothing left to do: the worker sleeps


def test_velocity_streams_at_the_control_rate_and_a_new_twist_goes_out_at_once() -> None:
    bench = active_bench()
    bench.sent.clear()
    bench.run(1.0)
    stream = bench.sent_messages(WheelVelocityCommand)
    assert 49 <= len(stream) <= 51
    assert {frame.message for frame in stream} == {WheelVelocityCommand(0.0, 0.0)}
    bench.sent.clear()
    bench.link.set_twist(1.0, 0.5, bench.now)
    immediate = FrameParser().feed(bench.link.take_outgoing())
    expected = WheelVelocityCommand(*GEOMETRY.wheel_speeds(1.0, 0.5))
    assert [f.message for f in immediate] == [expected]


def test_drive_integrates_odometry_against_the_firmware_encoders() -> None:
    bench = active_bench()
    start_ticks = bench.model.ticks()
    for _ in range(150):  # 3 s at 50 Hz, as the safety gate would publish
        bench.link.set_twist(0.5, 0.0, bench.now)
        bench.run(0.02)
    bench.run(0.04)
    odometry = [e.estimate for e in bench.events if isinstance(e, OdometryUpdated)][-1]
    wheel_travel = (bench.model.ticks()[0] - start_ticks[0]) / 4096 * 2 * math.pi * 0.1
    assert odometry.x == pytest.approx(wheel_travel, abs=0.005)
    assert 1.3 < odometry.x < 1.5  # 3 s at 0.5 m/s less the 0.25 s ramp
    assert odometry.linear == pytest.approx(0.5, abs=0.01)
    assert abs(odometry.y) < 1e-6


def test_command_timeout_streams_zeros() -> None:
    bench = active_bench()
    bench.link.set_twist(0.5, 0.0, bench.now)
    bench.run(0.4)
    assert bench.sent_messages(WheelVelocityCommand)[-1].message.left == pytest.approx(5.0)
    bench.run(0.2)  # 0.6 s after the last twist: past the 0.5 s command timeout
    assert bench.sent_messages(WheelVelocityCommand)[-1].message == WheelVelocityCommand(0, 0)
    assert not bench.model.watchdog_tripped  # zeros keep the MCU watchdog fed


def test_lock_command_is_acked_and_updates_the_compartment() -> None:
    bench = ready_bench()
    done = bench.command(lambda link, now: link.request_lock(LockAction.UNLOCK, now))
    assert done.ok
    assert done.lock_status is LockStatus.UNLOCKED
    assert any(isinstance(e, CompartmentChanged) and e.lock_status is LockStatus.UNLOCKED
               for e in bench.events)
    assert bench.model.open_door(bench.now)
    bench.run(0.01)
    refused = bench.command(lambda link, now: link.request_lock(LockAction.LOCK, now))
    assert not refused.ok
    assert "door is open" in refused.detail
    assert refused.door_open is True


def test_lost_answers_are_retried_every_100_ms_with_the_same_frame_then_given_up() -> None:
    bench = ready_bench()
    bench.host_filter = lambda data: b""  # nothing reaches the MCU
    bench.sent.clear()
    ticket = bench.link.request_lock(LockAction.UNLOCK, bench.now)
    bench.run(1.2)
    tries = bench.sent_messages(LockCommand)
    assert len(tries) == 10
    assert len({(frame.seq, frame.message) for frame in tries}) == 1  # identical frame
    done = bench.done()[-1]
    assert (done.ticket, done.ok) == (ticket, False)
    assert "after 10 tries" in done.detail
    assert bench.link.status(bench.now).ack_timeouts == 1


def test_a_lost_ack_is_answered_again_without_unlocking_twice() -> None:
    bench = ready_bench()
    faults = {"drop_next_ack": True}

    def drop_first_answer(data: bytes) -> bytes:
        if faults["drop_next_ack"] and b"\x86" in data[3:4]:
            faults["drop_next_ack"] = False
            return b""
        return data

    bench.mcu_filter = drop_first_answer
    done = bench.command(lambda link, now: link.request_lock(LockAction.UNLOCK, now))
    assert done.ok
    outcomes = [r.outcome for r in bench.model.commands if isinstance(r.message, LockCommand)]
    assert outcomes == [CommandOutcome.APPLIED, CommandOutcome.DUPLICATE]


def test_a_newer_lock_request_supersedes_the_outstanding_one() -> None:
    bench = ready_bench()
    bench.host_filter = lambda data: b""
    first = bench.link.request_lock(LockAction.UNLOCK, bench.now)
    bench.run(0.05)
    bench.host_filter = lambda data: data
    second = bench.command(lambda link, now: link.request_lock(LockAction.LOCK, now))
    first_done = next(done for done in bench.done() if done.ticket == first)
    assert not first_done.ok
    assert "superseded" in first_done.detail
    assert second.ok


def test_lock_request_survives_a_short_unplug_but_not_a_long_one() -> None:
    bench = ready_bench()
    bench.unplug()
    ticket = bench.link.request_lock(LockAction.UNLOCK, bench.now, timeout=1.0)
    bench.run(0.3)
    assert not bench.done()
    bench.plug()
    bench.run_until(lambda: any(done.ticket == ticket for done in bench.done()))
    assert next(done for done in bench.done() if done.ticket == ticket).ok
    bench.unplug()
    ticket = bench.link.request_lock(LockAction.LOCK, bench.now, timeout=0.5)
    bench.run(0.6)
    late = next(done for done in bench.done() if done.ticket == ticket)
    assert not late.ok
    assert "link disconnected" in late.detail


def test_estop_latches_until_motors_are_enabled_again() -> None:
    bench = active_bench()
    bench.link.set_twist(0.5, 0.0, bench.now)
    bench.run(0.3)
    assert bench.model.moving
    bench.model.set_estop(True, bench.now)
    bench.run(0.05)
    assert bench.link.estop_active
    assert not bench.model.moving
    assert [e.active for e in bench.events if isinstance(e, EstopChanged)][-1] is True
    bench.model.set_estop(False, bench.now)
    bench.link.set_twist(0.5, 0.0, bench.now)
    bench.run(2.0)  # released: no automatic re-enable, and only zeros are sent
    assert not bench.model.motors_enabled
    assert bench.sent_messages(WheelVelocityCommand)[-1].message == WheelVelocityCommand(0, 0)
    status = bench.link.status(bench.now)
    assert status.estop_latched
    assert not status.estop_active
    done = bench.command(lambda link, now: link.set_motors(True, now))  # the deliberate reset
    assert done.ok
    assert bench.model.motors_enabled
    bench.run(0.1)
    assert bench.sent_messages(WheelVelocityCommand)[-1].message == WheelVelocityCommand(0, 0)


def test_enable_while_estop_is_pressed_is_refused() -> None:
    bench = ready_bench()
    bench.model.set_estop(True, bench.now)
    bench.run(0.01)
    done = bench.command(lambda link, now: link.set_motors(True, now))
    assert not done.ok
    assert "e-stop" in done.detail


def test_controller_reboot_without_unplug_is_re_enabled() -> None:
    bench = active_bench()
    bench.model = FirmwareModel(EmulatorConfig(), now=bench.now)  # fresh boot: motors off
    bench.mcu_seq = SequenceCounter(0)
    bench.run_until(lambda: bench.model.motors_enabled, timeout=2.0)
    assert bench.link.odometry.resets <= 1


def test_secure_stops_disables_and_locks_when_the_door_is_closed() -> None:
    bench = active_bench()
    bench.command(lambda link, now: link.request_lock(LockAction.UNLOCK, now))
    bench.link.set_twist(0.5, 0.0, bench.now)
    bench.run(0.3)
    bench.sent.clear()
    tickets = bench.link.secure(bench.now)
    assert len(tickets) == 2
    bench.run_until(lambda: bench.link.pending_commands == 0)
    kinds = [frame.message for frame in bench.sent]
    assert kinds[0] == WheelVelocityCommand(0.0, 0.0)
    assert MotorEnable(False) in kinds
    assert LockCommand(LockAction.LOCK) in kinds
    assert not bench.model.motors_enabled
    assert not bench.model.moving
    assert bench.model.lock_status is LockStatus.LOCKED
    bench.run(0.5)
    assert not bench.sent_messages(WheelVelocityCommand)[1:]  # the stream stopped


def test_secure_locks_after_an_unlock_still_in_flight() -> None:
    bench = ready_bench()
    bench.link.request_lock(LockAction.UNLOCK, bench.now)  # sent, not yet answered
    assert bench.link.lock_status is LockStatus.LOCKED
    assert len(bench.link.secure(bench.now)) == 2
    bench.run_until(lambda: bench.link.pending_commands == 0)
    assert bench.model.lock_status is LockStatus.LOCKED


def test_secure_does_not_lock_into_an_open_door() -> None:
    bench = ready_bench()
    bench.command(lambda link, now: link.request_lock(LockAction.UNLOCK, now))
    bench.model.open_door(bench.now)
    bench.run(0.01)
    assert len(bench.link.secure(bench.now)) == 1


def test_heartbeat_round_trip_and_link_counters() -> None:
    bench = ready_bench()
    bench.run(1.0)
    status = bench.link.status(bench.now)
    assert status.rtt_last_ms is not None
    assert status.rtt_last_ms <= 1.0
    assert len(bench.sent_messages(Heartbeat)) >= 5
    faults = LinkFaults("mcu", corrupt_rate=0.01)
    bench.mcu_filter = faults.apply
    bench.run(2.0)
    status = bench.link.status(bench.now)
    assert faults.corrupted > 0
    assert status.rx.crc_errors + status.rx.header_errors > 0
    assert status.rx.lost_frames > 0
    assert status.state is LinkState.READY


def test_silence_makes_the_link_stale() -> None:
    bench = ready_bench()
    bench.mcu_filter = lambda data: b""
    bench.run(0.9)
    assert not bench.link.stale(bench.now)
    bench.run(0.2)
    assert bench.link.stale(bench.now)


def test_corruption_never_reaches_the_motors_as_a_wrong_command() -> None:
    bench = active_bench()
    faults = LinkFaults("host", corrupt_rate=0.01, drop_rate=0.002)
    bench.host_filter = faults.apply
    wanted = set()
    for index in range(500):
        twist = (0.2 + index * 1e-3, 0.0)
        wanted.add(WheelVelocityCommand(*GEOMETRY.wheel_speeds(*twist)))
        bench.link.set_twist(*twist, bench.now)
        bench.run(0.02)
    wanted.add(WheelVelocityCommand(0.0, 0.0))
    applied = [r.message for r in bench.model.commands if r.outcome is CommandOutcome.APPLIED]
    wire = {WheelVelocityCommand(m.left, m.right) for m in applied
            if isinstance(m, WheelVelocityCommand)}
    on_the_wire = {WheelVelocityCommand.decode_payload(w.encode_payload()) for w in wanted}
    assert wire <= on_the_wire
    assert faults.corrupted > 50


def test_events_are_bounded_when_nobody_drains_them() -> None:
    bench = ready_bench()
    bench.link.request_lock(LockAction.UNLOCK, bench.now)
    for _ in range(3000):
        bench.now = round(bench.now + 0.02, 6)
        bench.model.step(bench.now)
        bench.link.tick(bench.now)
        for frame in bench.mcu_parser.feed(bench.link.take_outgoing()):
            bench.model.receive(frame, bench.now)
        bench.link.on_bytes(b"".join(encode_frame(m, bench.mcu_seq.next())
                                     for m in bench.model.take_outbox()), bench.now)
    events = bench.link.take_events()
    assert len(events) <= 1000
    assert any(isinstance(e, CommandDone) for e in events)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="control_period"):
        LinkConfig(control_period=0.0)
    with pytest.raises(ValueError, match="ack_max_tries"):
        LinkConfig(ack_max_tries=0)
    with pytest.raises(ValueError, match="finite"):
        MotorControllerLink(GEOMETRY, now=0.0).set_twist(math.inf, 0.0, 0.0)


def test_core_modules_do_not_import_ros() -> None:
    code = ("import sys, delivery_robot.motor_controller_link, delivery_robot.serial_port_worker;"
            " sys.exit('rclpy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
