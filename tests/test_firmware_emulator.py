"""Firmware emulator: the MCU model with simulated time, then the emulator on a real pty talked
to through pyserial the way base_driver will (drive, watchdog, lock, e-stop, corruption,
unplug/replug, the command line)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial
from ros_harness import wait_for

from delivery_robot.firmware_emulator import (
    CommandOutcome,
    EmulatorConfig,
    FirmwareEmulator,
    FirmwareModel,
    LinkFaults,
)
from delivery_robot.serial_protocol import (
    Ack,
    BatteryReport,
    EncoderReport,
    EstopState,
    FirmwareVersion,
    Frame,
    FrameParser,
    Heartbeat,
    LockAction,
    LockCommand,
    LockState,
    LockStatus,
    Message,
    MessageType,
    MotorEnable,
    Nak,
    NakReason,
    Request,
    SequenceCounter,
    WheelVelocityCommand,
    encode_frame,
)

TICKS_PER_RAD = EmulatorConfig().ticks_per_rev / (2 * math.pi)


# -- the model, with simulated time --------------------------------------------------------------
def model_at_rest() -> FirmwareModel:
    model = FirmwareModel(EmulatorConfig(), now=0.0)
    model.receive(Frame(1, MotorEnable(True)), now=0.0)
    model.take_outbox()
    return model


def test_model_ramps_under_the_acceleration_limit_and_counts_ticks() -> None:
    model = model_at_rest()
    for step in range(6):  # 10 rad/s asked; 20 rad/s^2 allows 5 rad/s after 0.25 s
        model.receive(Frame(10 + step, WheelVelocityCommand(10.0, -10.0)), now=step * 0.05)
    model.step(0.25)
    left, right = model.wheels
    assert left.velocity == pytest.approx(5.0)
    assert right.velocity == pytest.approx(-5.0)
    assert left.position == pytest.approx(0.5 * 20.0 * 0.25**2)
    assert model.ticks() == (math.floor(0.625 * TICKS_PER_RAD), math.floor(-0.625 * TICKS_PER_RAD))


def test_model_watchdog_brakes_exactly_at_200_ms_without_commands() -> None:
    model = model_at_rest()
    model.receive(Frame(2, WheelVelocityCommand(1.0, 1.0)), now=1.0)
    model.step(1.199)
    assert model.moving
    assert model.next_deadline() <= 1.2
    model.step(1.2)
    assert not model.moving
    assert model.watchdog_tripped
    assert model.motors_stopped_at == pytest.approx(1.2)
    assert model.encoder_report(1.2).watchdog_tripped
    model.receive(Frame(3, WheelVelocityCommand(1.0, 1.0)), now=1.3)  # a command re-arms it
    assert not model.watchdog_tripped


def test_model_answers_a_retried_lock_command_without_acting_twice() -> None:
    model = FirmwareModel(EmulatorConfig(), now=0.0)
    unlock = Frame(40, LockCommand(LockAction.UNLOCK))
    model.receive(unlock, now=0.0)
    assert model.open_door(now=0.1)
    model.close_door(now=0.2)
    model.take_outbox()
    model.receive(unlock, now=0.3)  # the ACK was lost; the host retries
    assert Ack(MessageType.LOCK_COMMAND, 40) in model.take_outbox()
    outcomes = [record.outcome for record in model.commands]
    assert outcomes == [CommandOutcome.APPLIED, CommandOutcome.DUPLICATE]
    model.receive(unlock, now=5.0)  # same SEQ long after the dedup window: a new command
    assert model.commands[-1].outcome is CommandOutcome.APPLIED


def test_model_lock_rules_door_and_faults() -> None:
    model = FirmwareModel(EmulatorConfig(), now=0.0)
    assert not model.open_door(now=0.0)  # locked at boot
    model.receive(Frame(1, LockCommand(LockAction.UNLOCK)), now=0.1)
    assert model.open_door(now=0.2)
    model.receive(Frame(2, LockCommand(LockAction.LOCK)), now=0.3)
    assert Nak(MessageType.LOCK_COMMAND, 2, NakReason.DOOR_OPEN) in model.take_outbox()
    assert model.lock_status is LockStatus.UNLOCKED
    model.close_door(now=0.4)
    model.stuck_lock = True
    model.receive(Frame(3, LockCommand(LockAction.LOCK)), now=0.5)
    assert Nak(MessageType.LOCK_COMMAND, 3, NakReason.LOCK_FAULT) in model.take_outbox()
    assert model.lock_state() == LockState(LockStatus.FAULT, door_open=False)
    assert model.open_door(now=0.6)  # the jammed bolt stayed retracted
    model.close_door(now=0.7)
    model.stuck_lock = False
    model.receive(Frame(4, LockCommand(LockAction.LOCK)), now=0.8)
    assert model.lock_status is LockStatus.LOCKED


def test_model_estop_needs_a_deliberate_re_enable() -> None:
    model = model_at_rest()
    model.receive(Frame(2, WheelVelocityCommand(3.0, 3.0)), now=0.0)
    model.set_estop(True, now=0.1)
    assert not model.moving
    assert not model.motors_enabled
    model.receive(Frame(3, MotorEnable(True)), now=0.15)
    assert Nak(MessageType.MOTOR_ENABLE, 3, NakReason.ESTOP_ACTIVE) in model.take_outbox()
    model.set_estop(False, now=0.2)
    model.receive(Frame(4, WheelVelocityCommand(3.0, 3.0)), now=0.25)
    assert model.commands[-1].outcome is CommandOutcome.IGNORED
    assert not model.motors_enabled


def test_model_battery_drains_faster_when_driving_and_charges_on_the_charger() -> None:
    config = EmulatorConfig(battery_capacity_ah=0.01)
    idle, driving = FirmwareModel(config, now=0.0), FirmwareModel(config, now=0.0)
    driving.receive(Frame(1, MotorEnable(True)), now=0.0)
    for step in range(10):
        driving.receive(Frame(2 + step, WheelVelocityCommand(20.0, 20.0)), now=step * 0.1)
    idle.step(1.0)
    driving.step(1.0)
    assert driving.state_of_charge < idle.state_of_charge < config.initial_state_of_charge
    report = driving.battery_report()
    assert report.current < 0
    assert report.voltage < idle.battery_report().voltage
    idle.set_charger(True, now=1.0)
    before = idle.state_of_charge
    idle.step(2.0)
    assert idle.state_of_charge > before
    assert idle.battery_report().charger_connected


def test_model_answers_unknown_requests_with_nak() -> None:
    model = FirmwareModel(EmulatorConfig(), now=0.0)
    model.step(0.0)  # the reports due at boot
    model.take_outbox()
    model.receive(Frame(9, Request(MessageType.WHEEL_VELOCITY)), now=0.0)
    assert model.take_outbox() == [Nak(MessageType.REQUEST, 9, NakReason.UNSUPPORTED)]


def test_link_faults_are_reproducible_from_the_seed() -> None:
    data = bytes(range(256)) * 40
    runs = [LinkFaults("rx:7", corrupt_rate=0.01, drop_rate=0.01) for _ in range(2)]
    outputs = [faults.apply(data[:5000]) + faults.apply(data[5000:]) for faults in runs]
    assert outputs[0] == outputs[1] != data
    assert runs[0].corrupted > 0
    assert runs[0].dropped > 0
    assert LinkFaults("rx:8", corrupt_rate=0.01).apply(data) != outputs[0]


# -- the emulator on a pty, driven through pyserial ----------------------------------------------
class HostLink:
    """The host end of the wire as base_driver has it: pyserial, a reader thread, a parser."""

    def __init__(self, path: Path) -> None:
        self.port = serial.Serial(str(path), baudrate=115200, timeout=0.05)
        self.parser = FrameParser()
        self.seq = SequenceCounter(1000)
        self.sent: dict[int, Message] = {}  # by SEQ: what a decoded command must equal
        self.last_seq = -1
        self.frames: list[Frame] = []
        self.error: Exception | None = None
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._reader = threading.Thread(target=self._read, name="host-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self.port.read(max(1, self.port.in_waiting))
            except (serial.SerialException, OSError) as error:
                with self._changed:
                    self.error = error
                    self._changed.notify_all()
                return
            if data:
                decoded = self.parser.feed(data)
                with self._changed:
                    self.frames += decoded
                    self._changed.notify_all()

    def close(self) -> None:
        self._stopping.set()
        self._reader.join(timeout=2.0)
        self.port.close()

    def send(self, message: Message, seq: int | None = None) -> int:
        seq = self.seq.next() if seq is None else seq
        self.sent[seq] = message
        self.last_seq = seq
        self.port.write(encode_frame(message, seq))
        return seq

    def mark(self) -> int:
        """A position in the received frames, to wait only for what comes after it."""
        with self._changed:
            return len(self.frames)

    def wait_frame(
        self, match: Callable[[Message], bool], after: int = 0, timeout: float = 2.0
    ) -> Frame:
        found: list[Frame] = []

        def seen() -> bool:
            found[:] = [frame for frame in self.frames[after:] if match(frame.message)]
            return bool(found)

        with self._changed:
            if not self._changed.wait_for(seen, timeout):
                pytest.fail(f"no matching frame within {timeout} s; last: {self.frames[-3:]}")
        return found[0]

    def latest_report(self) -> EncoderReport:
        with self._changed:
            for frame in reversed(self.frames):
                if isinstance(frame.message, EncoderReport):
                    return frame.message
        return self.next_report()

    def next_report(self, timeout: float = 1.0) -> EncoderReport:
        frame = self.wait_frame(lambda m: isinstance(m, EncoderReport), self.mark(), timeout)
        assert isinstance(frame.message, EncoderReport)
        return frame.message

    def command(self, message: Message, timeout: float = 2.0) -> Ack | Nak:
        """Send an acked command, retrying the identical frame until answered (every 50 ms:
        a pty answers in well under a millisecond; the driver's 100 ms is for real links)."""
        seq = self.seq.next()
        deadline = time.monotonic() + timeout
        start = self.mark()  # an answer to any of the tries will do
        while time.monotonic() < deadline:
            self.send(message, seq)
            with self._changed:
                answered = self._changed.wait_for(lambda: self._answer(start, seq), 0.05)
            if answered:
                return answered
        pytest.fail(f"{message} (seq {seq}) was not answered within {timeout} s")

    def _answer(self, start: int, seq: int) -> Ack | Nak | None:
        for frame in self.frames[start:]:
            if isinstance(frame.message, Ack | Nak) and frame.message.seq == seq:
                return frame.message
        return None

    def drive(
        self, left: float, right: float, until: Callable[[], bool], timeout: float = 3.0
    ) -> None:
        """Stream velocity commands at the report rate (50 Hz) until `until()` holds."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                pytest.fail(f"condition not reached within {timeout} s of driving")
            self.send(WheelVelocityCommand(left, right))
            self.next_report()


@pytest.fixture
def make_emulator(tmp_path: Path) -> Iterator[Callable[..., FirmwareEmulator]]:
    started: list[FirmwareEmulator] = []

    def make(corrupt_rate: float = 0.0, drop_rate: float = 0.0) -> FirmwareEmulator:
        link = tmp_path / "dev" / "ttyEMU"
        emulator = FirmwareEmulator(link, seed=1, corrupt_rate=corrupt_rate, drop_rate=drop_rate)
        emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., FirmwareEmulator]) -> FirmwareEmulator:
    return make_emulator()


@pytest.fixture
def connect() -> Iterator[Callable[[Path], HostLink]]:
    links: list[HostLink] = []

    def open_link(path: Path) -> HostLink:
        link = HostLink(path)
        links.append(link)
        return link

    yield open_link
    for link in links:
        link.close()


@pytest.fixture
def host(emulator: FirmwareEmulator, connect: Callable[[Path], HostLink]) -> HostLink:
    return connect(emulator.link)


def test_velocity_command_moves_the_encoders_at_the_commanded_rate(
    emulator: FirmwareEmulator, host: HostLink
) -> None:
    assert host.command(MotorEnable(True)) == Ack(MessageType.MOTOR_ENABLE, host.last_seq)
    host.drive(4.0, -2.0, until=lambda: emulator.snapshot().wheel_velocities == (4.0, -2.0))
    first = host.next_report()
    host.drive(
        4.0, -2.0, until=lambda: host.latest_report().mcu_time_us - first.mcu_time_us > 300_000
    )
    last = host.latest_report()
    elapsed = (last.mcu_time_us - first.mcu_time_us) / 1e6
    left_rate = (last.left_ticks - first.left_ticks) / elapsed
    right_rate = (last.right_ticks - first.right_ticks) / elapsed
    assert left_rate == pytest.approx(4.0 * TICKS_PER_RAD, rel=0.01)
    assert right_rate == pytest.approx(-2.0 * TICKS_PER_RAD, rel=0.01)
    assert last.motors_enabled
    assert not last.watchdog_tripped


def test_velocity_is_ignored_until_motors_are_enabled(
    emulator: FirmwareEmulator, host: HostLink
) -> None:
    before = report = host.next_report()
    for _ in range(5):
        host.send(WheelVelocityCommand(5.0, 5.0))
        report = host.next_report()
    assert (report.left_ticks, report.right_ticks) == (before.left_ticks, before.right_ticks)
    assert not report.motors_enabled
    assert {record.outcome for record in emulator.commands()} == {CommandOutcome.IGNORED}


def test_watchdog_stops_the_motors_within_200_ms_of_the_last_command(
    emulator: FirmwareEmulator, host: HostLink
) -> None:
    host.command(MotorEnable(True))
    host.drive(3.0, 3.0, until=lambda: emulator.snapshot().wheel_velocities == (3.0, 3.0))
    steady = time.monotonic()
    host.drive(3.0, 3.0, until=lambda: time.monotonic() - steady > 0.3)
    assert not emulator.snapshot().watchdog_tripped  # a 50 Hz stream keeps it fed
    last_sent = time.monotonic()
    host.send(WheelVelocityCommand(3.0, 3.0))
    wait_for(lambda: not emulator.snapshot().moving, timeout=2.0, what="the watchdog stop")
    snapshot = emulator.snapshot()
    assert snapshot.motors_stopped_at is not None
    assert snapshot.last_velocity_command_at is not None
    delay = snapshot.motors_stopped_at - last_sent
    assert delay <= 0.25, f"motors stopped {delay * 1000:.0f} ms after the last command"
    assert snapshot.motors_stopped_at - snapshot.last_velocity_command_at >= 0.2  # not early
    tripped = host.wait_frame(lambda m: isinstance(m, EncoderReport) and m.watchdog_tripped)
    assert isinstance(tripped.message, EncoderReport)
    assert host.next_report().left_ticks == tripped.message.left_ticks  # the wheels stay still


def test_lock_command_is_acked_and_its_state_reported(
    emulator: FirmwareEmulator, host: HostLink
) -> None:
    start = host.mark()
    reply = host.command(LockCommand(LockAction.UNLOCK))
    assert isinstance(reply, Ack)
    assert reply.message_type == MessageType.LOCK_COMMAND
    host.wait_frame(lambda m: m == LockState(LockStatus.UNLOCKED, door_open=False), start)
    start = host.mark()
    assert emulator.open_door()
    host.wait_frame(lambda m: m == LockState(LockStatus.UNLOCKED, door_open=True), start)
    assert host.command(LockCommand(LockAction.LOCK)) == Nak(
        MessageType.LOCK_COMMAND, host.last_seq, NakReason.DOOR_OPEN
    )
    emulator.close_door()
    start = host.mark()
    assert isinstance(host.command(LockCommand(LockAction.LOCK)), Ack)
    host.wait_frame(lambda m: m == LockState(LockStatus.LOCKED, door_open=False), start)
    assert not emulator.open_door()


def test_a_repeated_lock_frame_is_answered_twice_and_executed_once(
    emulator: FirmwareEmulator, host: HostLink
) -> None:
    start = host.mark()
    host.send(LockCommand(LockAction.UNLOCK), seq=77)
    host.send(LockCommand(LockAction.UNLOCK), seq=77)
    wait_for(
        lambda: (
            sum(f.message == Ack(MessageType.LOCK_COMMAND, 77) for f in host.frames[start:]) == 2
        ),
        timeout=2.0,
        what="two ACKs for the retried lock command",
    )
    outcomes = [record.outcome for record in emulator.commands()]
    assert outcomes == [CommandOutcome.APPLIED, CommandOutcome.DUPLICATE]


def test_stuck_lock_reports_a_fault(emulator: FirmwareEmulator, host: HostLink) -> None:
    emulator.set_stuck_lock(True)
    start = host.mark()
    reply = host.command(LockCommand(LockAction.UNLOCK))
    assert isinstance(reply, Nak)
    assert reply.reason is NakReason.LOCK_FAULT
    host.wait_frame(lambda m: m == LockState(LockStatus.FAULT, door_open=False), start)
    assert not emulator.open_door()  # still bolted
    emulator.set_stuck_lock(False)
    start = host.mark()
    assert isinstance(host.command(LockCommand(LockAction.UNLOCK)), Ack)
    host.wait_frame(lambda m: m == LockState(LockStatus.UNLOCKED, door_open=False), start)


def test_estop_stops_the_motors_and_is_reported(emulator: FirmwareEmulator, host: HostLink) -> None:
    host.command(MotorEnable(True))
    host.drive(2.0, 2.0, until=lambda: emulator.snapshot().moving)
    start = host.mark()
    emulator.set_estop(True)
    host.wait_frame(lambda m: m == EstopState(active=True), start)
    snapshot = emulator.snapshot()
    assert not snapshot.moving
    assert not snapshot.motors_enabled
    report = host.next_report()
    assert report.estop_active
    assert not report.motors_enabled
    reply = host.command(MotorEnable(True))
    assert isinstance(reply, Nak)
    assert reply.reason is NakReason.ESTOP_ACTIVE
    emulator.set_estop(False)
    assert isinstance(host.command(MotorEnable(True)), Ack)


def test_heartbeat_echo_version_and_battery_requests(
    emulator: FirmwareEmulator, host: HostLink
) -> None:
    start = host.mark()
    host.send(Heartbeat(uptime_ms=123_456, echo_ms=0))
    host.send(Request(MessageType.FIRMWARE_VERSION))
    host.send(Request(MessageType.BATTERY_REPORT))
    host.wait_frame(lambda m: isinstance(m, Heartbeat) and m.echo_ms == 123_456, start)
    version = host.wait_frame(lambda m: isinstance(m, FirmwareVersion), start).message
    assert version == FirmwareVersion(1, 1, 0, 0, 0x00C0FFEE)
    battery = host.wait_frame(lambda m: isinstance(m, BatteryReport), start).message
    assert isinstance(battery, BatteryReport)
    assert 21.0 < battery.voltage < 29.4
    assert battery.current < 0


@pytest.mark.parametrize(
    ("corrupt_rate", "drop_rate"), [(1e-3, 0.0), (1e-2, 1e-2)], ids=["1-in-1000", "harsh"]
)
def test_corruption_never_executes_a_wrong_command(
    make_emulator: Callable[..., FirmwareEmulator],
    connect: Callable[[Path], HostLink],
    corrupt_rate: float,
    drop_rate: float,
) -> None:
    emulator = make_emulator(corrupt_rate=corrupt_rate, drop_rate=drop_rate)
    host = connect(emulator.link)
    assert isinstance(host.command(MotorEnable(True)), Ack)
    velocity_count = 2000
    for index in range(velocity_count):  # every command distinct, so a mix-up would show
        host.send(WheelVelocityCommand(index / 1000, -index / 1000))
    lock_actions = [LockAction.UNLOCK, LockAction.LOCK] * 10
    for action in lock_actions:  # each acked after its retries; the FIFO pty then has
        assert isinstance(host.command(LockCommand(action)), Ack)  # delivered all before it

    records = emulator.commands()
    for record in records:
        assert host.sent.get(record.seq) == record.message, f"executed a wrong command: {record}"
    applied = [r for r in records if r.outcome is CommandOutcome.APPLIED]
    locks = [r.message for r in applied if isinstance(r.message, LockCommand)]
    assert locks == [LockCommand(action) for action in lock_actions]  # each exactly once
    velocities = sum(isinstance(r.message, WheelVelocityCommand) for r in applied)
    frame_survival = (1 - corrupt_rate - drop_rate) ** 16  # a velocity frame is 16 bytes
    assert velocities >= 0.9 * frame_survival * velocity_count
    snapshot = emulator.snapshot()
    assert snapshot.lock_status is LockStatus.LOCKED
    assert snapshot.rx_corrupted_bytes > 5  # the link really was damaged...
    assert snapshot.rx.crc_errors + snapshot.rx.header_errors > 0  # ...and the damage caught
    for frame in host.frames:  # the other direction delivered nothing bogus either
        if isinstance(frame.message, Ack | Nak):
            assert frame.message.seq in host.sent


def test_unplug_and_replug(emulator: FirmwareEmulator, connect: Callable[[Path], HostLink]) -> None:
    host = connect(emulator.link)
    start = host.mark()
    host.send(Heartbeat(1, 0))
    host.wait_frame(lambda m: isinstance(m, Heartbeat) and m.echo_ms == 1, start)

    emulator.unplug()
    assert not os.path.lexists(emulator.link)
    wait_for(lambda: host.error is not None, timeout=2.0, what="the host port to fail")
    with pytest.raises(serial.SerialException):
        host.port.write(encode_frame(Heartbeat(2, 0), 0))
    assert not emulator.snapshot().plugged

    replugged_at = time.monotonic()
    emulator.replug()
    assert os.path.realpath(emulator.link) == emulator.port_path
    host = connect(emulator.link)
    start = host.mark()
    host.send(Request(MessageType.FIRMWARE_VERSION))
    host.send(Heartbeat(3, 0))
    host.wait_frame(lambda m: isinstance(m, Heartbeat) and m.echo_ms == 3, start)
    host.wait_frame(lambda m: isinstance(m, FirmwareVersion), start)
    assert time.monotonic() - replugged_at < 1.0
    assert isinstance(host.command(MotorEnable(True)), Ack)


def test_stop_removes_the_link_and_leaves_no_thread(tmp_path: Path) -> None:
    link = tmp_path / "ttyEMU"
    with FirmwareEmulator(link) as emulator:
        assert os.path.realpath(link) == emulator.port_path
    assert not os.path.lexists(link)
    assert not any(thread.name == "firmware-emulator" for thread in threading.enumerate())


def test_command_line_emulator(tmp_path: Path, connect: Callable[[Path], HostLink]) -> None:
    link = tmp_path / "x" / "ttyEMU"
    process = subprocess.Popen(
        [sys.executable, "-m", "delivery_robot.firmware_emulator", "--link", str(link)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: os.path.lexists(link) or process.poll() is not None,
            timeout=10.0,
            what="the emulator process to create its link",
        )
        assert process.poll() is None
        host = connect(link)
        start = host.mark()
        host.send(Request(MessageType.FIRMWARE_VERSION))
        host.wait_frame(lambda m: isinstance(m, FirmwareVersion), start)
        host.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10.0)
    assert process.returncode == 0, output
    assert "ready" in output
    assert not os.path.lexists(link)


def test_emulator_does_not_import_ros() -> None:
    code = "import sys, delivery_robot.firmware_emulator; sys.exit('rclpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
