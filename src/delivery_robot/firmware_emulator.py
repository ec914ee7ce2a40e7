"""Firmware emulator: the motor/lock microcontroller in Python, on a pseudo-terminal.

Lets the base_driver, its tests, the benchmarks and an operator's bring-up rehearsal run the
real serial path (pyserial, the protocol in docs/serial_protocol.md) without hardware, and
inject the faults real links have: corrupted and dropped bytes, unplugging, a jammed lock.

Two layers: `FirmwareModel` is the MCU's behaviour with time passed in (deterministic, testable
without threads); `FirmwareEmulator` runs it on a pty in a thread of its own and publishes the
pty's slave under a stable symlink the caller chooses, so "unplug" removes the link and closes
the pty, and "replug" opens a new pty and puts the link back, as a USB adapter re-enumerating.

Manual use: python -m delivery_robot.firmware_emulator --link /tmp/emu/ttyEMU
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import signal
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from queue import Empty, SimpleQueue
from random import Random
from types import FrameType, TracebackType
from typing import Final, TypeVar

from delivery_robot.serial_protocol import (
    PROTOCOL_VERSION,
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
    ParserStats,
    Request,
    SequenceCounter,
    WheelVelocityCommand,
    encode_frame,
)

_T = TypeVar("_T")
_INT32: Final = 1 << 32
_CALL_TIMEOUT_S: Final = 5.0
_WATCHDOG_LEAD: Final = 0.002  # s the loop wakes before the watchdog deadline, then polls
_ACKED_COMMANDS: Final = (MotorEnable, LockCommand)


@dataclass(frozen=True)
class EmulatorConfig:
    """Physical and firmware parameters (SI units). Defaults: a 7S Li-ion, 4096-count encoders."""

    wheel_accel_limit: float = 20.0  # rad/s^2, applied to commanded changes
    max_wheel_speed: float = 40.0  # rad/s, commands beyond it are clamped
    ticks_per_rev: int = 4096
    watchdog_timeout: float = 0.2  # s without a valid velocity command -> motors stop
    encoder_period: float = 0.02  # s, 50 Hz encoder reports
    battery_period: float = 1.0  # s
    status_period: float = 0.5  # s, lock and e-stop state repeated even without change
    dedup_window: float = 2.0  # s a (TYPE, SEQ, payload) is remembered as already executed
    battery_capacity_ah: float = 20.0
    idle_current: float = 0.8  # A drawn by electronics
    current_per_wheel_speed: float = 0.25  # A per rad/s of each wheel
    charge_current: float = 5.0  # A while the charger is connected
    internal_resistance: float = 0.05  # ohm, voltage sag under load
    full_voltage: float = 29.4  # V at 100 %
    empty_voltage: float = 21.0  # V at 0 %
    initial_state_of_charge: float = 0.9
    firmware_version: tuple[int, int, int] = (1, 0, 0)
    firmware_build: int = 0x00C0FFEE
    command_log_size: int = 100_000

    def __post_init__(self) -> None:
        positive = (
            "wheel_accel_limit",
            "max_wheel_speed",
            "watchdog_timeout",
            "encoder_period",
            "battery_period",
            "status_period",
            "battery_capacity_ah",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.ticks_per_rev <= 0:
            raise ValueError("ticks_per_rev must be > 0")
        if not 0.0 <= self.initial_state_of_charge <= 1.0:
            raise ValueError("initial_state_of_charge must be in [0, 1]")


class CommandOutcome(Enum):
    APPLIED = "applied"
    IGNORED = "ignored"  # velocity while motors are disabled or the e-stop is pressed
    DUPLICATE = "duplicate"  # a retry of an acked command: answered again, not re-executed
    REFUSED = "refused"  # answered with NAK


@dataclass(frozen=True)
class CommandRecord:
    """One host command as the firmware decoded it; tests compare these with what was sent."""

    at: float  # time.monotonic() of execution
    seq: int
    message: Message
    outcome: CommandOutcome


@dataclass
class _Wheel:
    target: float = 0.0  # rad/s
    velocity: float = 0.0  # rad/s
    position: float = 0.0  # rad

    def advance(self, dt: float, accel_limit: float) -> float | None:
        """Integrate exactly under the acceleration limit; returns when the target was reached."""
        change = self.target - self.velocity
        if abs(change) <= accel_limit * dt:
            reached = abs(change) / accel_limit
            self.position += (self.velocity + self.target) / 2 * reached
            self.position += self.target * (dt - reached)
            self.velocity = self.target
            return reached
        new_velocity = self.velocity + math.copysign(accel_limit * dt, change)
        self.position += (self.velocity + new_velocity) / 2 * dt
        self.velocity = new_velocity
        return None


@dataclass(frozen=True)
class _CachedReply:
    seq: int
    payload: bytes
    reply: Ack | Nak
    at: float


class FirmwareModel:
    """The MCU: motors, encoders, lock and door switch, battery, e-stop, watchdog, replies.

    Every method takes `now` (seconds, any monotonic origin); outgoing messages collect in
    `outbox` for the transport to frame and send.
    """

    def __init__(self, config: EmulatorConfig, now: float) -> None:
        self.config = config
        self.boot_time = now
        self.outbox: list[Message] = []
        self.commands: deque[CommandRecord] = deque(maxlen=config.command_log_size)
        self.wheels = (_Wheel(), _Wheel())
        self.motors_enabled = False  # a real MCU boots with the power stage off
        self.watchdog_tripped = False
        self.watchdog_trips = 0
        self.watchdog_late: float | None = None  # s past its deadline the last trip acted
        self.estop_active = False
        self.applied_seq = 0
        self.last_velocity_command_at: float | None = None
        self.motors_stopped_at: float | None = None
        self.bolt_engaged = True
        self.lock_fault = False
        self.door_open = False
        self.stuck_lock = False
        self.state_of_charge = config.initial_state_of_charge
        self.battery_current = -config.idle_current
        self.charger_connected = False
        self._last_step = now
        self._cached_replies: dict[int, _CachedReply] = {}
        self._next_encoder = now
        self._next_battery = now
        self._next_status = now

    # -- time ---------------------------------------------------------------------------------
    def step(self, now: float) -> None:
        """Advance physics to `now`, run the watchdog, queue the reports that are due."""
        dt = now - self._last_step
        if dt > 0:
            self._integrate(dt)
            self._last_step = now
        deadline = self.watchdog_deadline()
        if deadline <= now:
            self.watchdog_tripped = True
            self.watchdog_trips += 1
            self.watchdog_late = now - deadline
            self._brake(now)
        if now >= self._next_encoder:
            self.outbox.append(self.encoder_report(now))
            self._next_encoder = _next_due(self._next_encoder, self.config.encoder_period, now)
        if now >= self._next_battery:
            self.outbox.append(self.battery_report())
            self._next_battery = _next_due(self._next_battery, self.config.battery_period, now)
        if now >= self._next_status:
            self.outbox += [self.lock_state(), EstopState(self.estop_active)]
            self._next_status = _next_due(self._next_status, self.config.status_period, now)

    def next_deadline(self) -> float:
        """When `step` must next run for the reports and the watchdog to be on time."""
        return min(
            self._next_encoder, self._next_battery, self._next_status, self.watchdog_deadline()
        )

    def watchdog_deadline(self) -> float:
        """One expression for both checking and scheduling, so the loop never wakes at the
        deadline to find it not yet due by a rounding error."""
        if self.last_velocity_command_at is None or self.watchdog_tripped:
            return math.inf
        return self.last_velocity_command_at + self.config.watchdog_timeout

    def _integrate(self, dt: float) -> None:
        left, right = self.wheels
        if left.velocity == left.target and right.velocity == right.target:
            # Cruising or standing (most steps, every frame received runs one): no ramp.
            left.position += left.velocity * dt
            right.position += right.velocity * dt
        else:
            was_moving = self.moving
            reached = [wheel.advance(dt, self.config.wheel_accel_limit) for wheel in self.wheels]
            if was_moving and not self.moving:
                settle = max(r for r in reached if r is not None)
                self.motors_stopped_at = self._last_step + settle
        speed_sum = abs(left.velocity) + abs(right.velocity)
        if self.charger_connected:
            self.battery_current = self.config.charge_current
        else:
            cfg = self.config
            self.battery_current = -(cfg.idle_current + cfg.current_per_wheel_speed * speed_sum)
        charge = self.battery_current * dt / (self.config.battery_capacity_ah * 3600.0)
        self.state_of_charge = min(1.0, max(0.0, self.state_of_charge + charge))

    def _brake(self, now: float) -> None:
        """Watchdog, e-stop and disable stop at once (short-brake), not along the accel ramp."""
        was_moving = self.moving
        for wheel in self.wheels:
            wheel.target = 0.0
            wheel.velocity = 0.0
        if was_moving:
            self.motors_stopped_at = now

    # -- state --------------------------------------------------------------------------------
    @property
    def moving(self) -> bool:
        return any(wheel.velocity != 0.0 for wheel in self.wheels)

    @property
    def lock_status(self) -> LockStatus:
        if self.lock_fault:
            return LockStatus.FAULT
        return LockStatus.LOCKED if self.bolt_engaged else LockStatus.UNLOCKED

    def ticks(self) -> tuple[int, int]:
        """Encoder counts as the hardware counter holds them (int32, wrapping)."""
        per_rad = self.config.ticks_per_rev / (2.0 * math.pi)
        left, right = (math.floor(wheel.position * per_rad) for wheel in self.wheels)
        return _wrap_int32(left), _wrap_int32(right)

    def battery_voltage(self) -> float:
        cfg = self.config
        span = cfg.full_voltage - cfg.empty_voltage
        open_circuit = cfg.empty_voltage + span * self.state_of_charge
        return max(0.0, open_circuit + self.battery_current * cfg.internal_resistance)

    def encoder_report(self, now: float) -> EncoderReport:
        left, right = self.ticks()
        return EncoderReport(
            mcu_time_us=round((now - self.boot_time) * 1e6) % _INT32,
            left_ticks=left,
            right_ticks=right,
            applied_seq=self.applied_seq,
            motors_enabled=self.motors_enabled,
            watchdog_tripped=self.watchdog_tripped,
            estop_active=self.estop_active,
        )

    def battery_report(self) -> BatteryReport:
        return BatteryReport(
            voltage=round(self.battery_voltage(), 3),
            current=round(self.battery_current, 2),
            state_of_charge=round(self.state_of_charge, 3),
            charger_connected=self.charger_connected,
        )

    def lock_state(self) -> LockState:
        return LockState(self.lock_status, self.door_open)

    def firmware_version(self) -> FirmwareVersion:
        major, minor, patch = self.config.firmware_version
        return FirmwareVersion(PROTOCOL_VERSION, major, minor, patch, self.config.firmware_build)

    def announce(self, now: float) -> None:
        """What the firmware says when a host connects: who it is and the current state."""
        self.step(now)
        self.outbox += [self.firmware_version(), self.lock_state(), EstopState(self.estop_active)]
        self.outbox.append(self.battery_report())

    def take_outbox(self) -> list[Message]:
        messages, self.outbox = self.outbox, []
        return messages

    # -- inputs from the host -----------------------------------------------------------------
    def receive(self, frame: Frame, now: float) -> None:
        message = frame.message
        if isinstance(message, Heartbeat):
            # Answered at once from the receive path (the protocol's RTT probe); the control
            # loop (`step`) runs on its own schedule, as on the MCU.
            uptime_ms = round((now - self.boot_time) * 1000) % _INT32
            self.outbox.append(Heartbeat(uptime_ms=uptime_ms, echo_ms=message.uptime_ms))
            return
        self.step(now)
        if isinstance(message, WheelVelocityCommand):
            self._on_velocity(frame.seq, message, now)
        elif isinstance(message, _ACKED_COMMANDS):
            self._on_acked_command(frame.seq, message, now)
        elif isinstance(message, Request):
            self._on_request(frame.seq, message, now)
        # MCU->host types arriving here are ignored, as the firmware's dispatch table would.

    def _record(self, now: float, seq: int, message: Message, outcome: CommandOutcome) -> None:
        self.commands.append(CommandRecord(now, seq, message, outcome))

    def _on_velocity(self, seq: int, command: WheelVelocityCommand, now: float) -> None:
        if not self.motors_enabled or self.estop_active:
            self._record(now, seq, command, CommandOutcome.IGNORED)
            return
        limit = self.config.max_wheel_speed
        for wheel, target in zip(self.wheels, (command.left, command.right), strict=True):
            wheel.target = min(limit, max(-limit, target))
        self.last_velocity_command_at = now
        self.watchdog_tripped = False
        self.applied_seq = seq
        self._record(now, seq, command, CommandOutcome.APPLIED)

    def _on_acked_command(self, seq: int, command: MotorEnable | LockCommand, now: float) -> None:
        payload = command.encode_payload()
        cached = self._cached_replies.get(command.TYPE)
        if (
            cached is not None
            and cached.seq == seq
            and cached.payload == payload
            and now - cached.at <= self.config.dedup_window
        ):
            # A retry whose ACK got lost: answer again, never act twice.
            self._record(now, seq, command, CommandOutcome.DUPLICATE)
            self.outbox.append(cached.reply)
            return
        if isinstance(command, LockCommand):
            reply = self._execute_lock(seq, command)
        else:
            reply = self._execute_motor_enable(seq, command, now)
        outcome = CommandOutcome.APPLIED if isinstance(reply, Ack) else CommandOutcome.REFUSED
        self._record(now, seq, command, outcome)
        self._cached_replies[command.TYPE] = _CachedReply(seq, payload, reply, now)
        self.outbox.append(reply)
        if isinstance(command, LockCommand):
            self.outbox.append(self.lock_state())

    def _execute_lock(self, seq: int, command: LockCommand) -> Ack | Nak:
        if self.stuck_lock:
            self.lock_fault = True  # the bolt stays where it was
            return Nak(command.TYPE, seq, NakReason.LOCK_FAULT)
        if command.action == LockAction.LOCK and self.door_open:
            return Nak(command.TYPE, seq, NakReason.DOOR_OPEN)
        self.bolt_engaged = command.action == LockAction.LOCK
        self.lock_fault = False
        return Ack(command.TYPE, seq)

    def _execute_motor_enable(self, seq: int, command: MotorEnable, now: float) -> Ack | Nak:
        if command.enable and self.estop_active:
            return Nak(command.TYPE, seq, NakReason.ESTOP_ACTIVE)
        self.motors_enabled = command.enable
        if not command.enable:
            self._brake(now)
        return Ack(command.TYPE, seq)

    def _on_request(self, seq: int, request: Request, now: float) -> None:
        reports: dict[int, Callable[[], Message]] = {
            MessageType.ENCODER_REPORT: lambda: self.encoder_report(now),
            MessageType.BATTERY_REPORT: self.battery_report,
            MessageType.LOCK_STATE: self.lock_state,
            MessageType.ESTOP_STATE: lambda: EstopState(self.estop_active),
            MessageType.FIRMWARE_VERSION: self.firmware_version,
        }
        report = reports.get(request.message_type)
        if report is None:
            self.outbox.append(Nak(request.TYPE, seq, NakReason.UNSUPPORTED))
        else:
            self.outbox.append(report())

    # -- inputs from the physical world -------------------------------------------------------
    def set_estop(self, active: bool, now: float) -> None:
        """The hardware e-stop cuts the power stage; releasing it does not re-enable motors,
        so the host must send MOTOR_ENABLE again (no restart without a deliberate reset)."""
        self.step(now)
        if active:
            self.motors_enabled = False
            self._brake(now)
        if active != self.estop_active:
            self.estop_active = active
            self.outbox.append(EstopState(active))

    def open_door(self, now: float) -> bool:
        """Someone pulls the door: it opens only if the bolt is retracted."""
        self.step(now)
        if self.bolt_engaged:
            return False
        if not self.door_open:
            self.door_open = True
            self.outbox.append(self.lock_state())
        return True

    def close_door(self, now: float) -> None:
        self.step(now)
        if self.door_open:
            self.door_open = False
            self.outbox.append(self.lock_state())

    def set_charger(self, connected: bool, now: float) -> None:
        self.step(now)
        self.charger_connected = connected


def _next_due(due: float, period: float, now: float) -> float:
    """Keep a fixed rate, but after a stall skip missed slots instead of sending a burst."""
    due += period
    return due if due > now else now + period


def _wrap_int32(value: int) -> int:
    return (value + (1 << 31)) % _INT32 - (1 << 31)


class LinkFaults:
    """Per-byte fault injection for one direction of the wire, reproducible from its seed:
    the n-th byte through it is dropped or corrupted the same way on every run, however the
    stream is split into writes.

    Each byte is dropped with probability `drop_rate`, else corrupted with `corrupt_rate`.
    Instead of a random number per byte (a Python loop over every byte of every frame), the
    number of intact bytes before the next fault is drawn from its geometric distribution, so
    clean stretches are copied in one slice.
    """

    def __init__(self, seed: str, corrupt_rate: float = 0.0, drop_rate: float = 0.0) -> None:
        self._rng = Random(seed)
        self.corrupt_rate = 0.0
        self.drop_rate = 0.0
        self._fault_rate = 0.0
        self._intact_left = 0  # bytes to pass before the next fault
        self.configure(corrupt_rate, drop_rate)
        self.corrupted = 0
        self.dropped = 0

    def configure(self, corrupt_rate: float, drop_rate: float) -> None:
        for name, rate in (("corrupt_rate", corrupt_rate), ("drop_rate", drop_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        self.corrupt_rate = corrupt_rate
        self.drop_rate = drop_rate
        self._fault_rate = drop_rate + (1.0 - drop_rate) * corrupt_rate
        self._intact_left = self._draw_gap()

    def _draw_gap(self) -> int:
        rate = self._fault_rate
        if rate <= 0.0 or rate >= 1.0:
            return 0  # no faults, or every byte
        return int(math.log1p(-self._rng.random()) / math.log1p(-rate))

    def apply(self, data: bytes) -> bytes:
        if self._fault_rate == 0.0:
            return data
        rng = self._rng
        drop_share = self.drop_rate / self._fault_rate
        out = bytearray()
        position = 0
        while True:
            fault_at = position + self._intact_left
            if fault_at >= len(data):
                self._intact_left -= len(data) - position
                out += data[position:]
                return bytes(out)
            out += data[position:fault_at]
            if rng.random() < drop_share:
                self.dropped += 1
            else:
                out.append(data[fault_at] ^ rng.randrange(1, 256))  # never a no-op
                self.corrupted += 1
            position = fault_at + 1
            self._intact_left = self._draw_gap()


@dataclass
class _Port:
    master: int
    slave: int  # held open so the pty survives the host closing and reopening it
    path: str


@dataclass(frozen=True)
class EmulatorSnapshot:
    """A consistent view of the emulated robot and its link, for tests and the console."""

    time: float  # time.monotonic()
    wheel_velocities: tuple[float, float]  # rad/s
    wheel_targets: tuple[float, float]  # rad/s
    wheel_ticks: tuple[int, int]
    motors_enabled: bool
    watchdog_tripped: bool
    estop_active: bool
    last_velocity_command_at: float | None
    motors_stopped_at: float | None
    watchdog_trips: int
    watchdog_late: float | None  # s after its deadline the last watchdog trip braked
    lock_status: LockStatus
    bolt_engaged: bool
    door_open: bool
    stuck_lock: bool
    state_of_charge: float
    battery_voltage: float  # V
    battery_current: float  # A, negative while discharging
    charger_connected: bool
    plugged: bool
    port_path: str | None
    rx: ParserStats = field(default_factory=ParserStats)
    rx_corrupted_bytes: int = 0
    rx_dropped_bytes: int = 0
    tx_corrupted_bytes: int = 0
    tx_dropped_bytes: int = 0
    tx_overflow_bytes: int = 0  # not written because the host was not reading (UART overrun)

    @property
    def moving(self) -> bool:
        return any(v != 0.0 for v in self.wheel_velocities)


class FirmwareEmulator:
    """Runs a FirmwareModel on a pseudo-terminal in its own thread.

    All model and port changes happen on that thread; the public methods hand their work to it
    and wait, so callers on any thread see consistent state and no lock is held across I/O.
    """

    def __init__(
        self,
        link: str | os.PathLike[str],
        config: EmulatorConfig | None = None,
        *,
        seed: int = 0,
        corrupt_rate: float = 0.0,
        drop_rate: float = 0.0,
        stuck_lock: bool = False,
    ) -> None:
        self.link = Path(link)
        self.config = config or EmulatorConfig()
        self._model = FirmwareModel(self.config, time.monotonic())
        self._model.stuck_lock = stuck_lock
        self._rx_faults = LinkFaults(f"rx:{seed}", corrupt_rate, drop_rate)
        self._tx_faults = LinkFaults(f"tx:{seed}", corrupt_rate, drop_rate)
        self._parser = FrameParser()
        self._tx_seq = SequenceCounter(0)
        self._tx_overflow = 0
        self._port: _Port | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._calls: SimpleQueue[tuple[Callable[[], object], Future[object]]] = SimpleQueue()
        self._wake_read = self._wake_write = -1  # a pipe while running: wakes select()
        self._error: BaseException | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None or self._closed:
            raise RuntimeError("a FirmwareEmulator can be started once")
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._plug()
        self._thread = threading.Thread(target=self._run, name="firmware-emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, close the pty and remove the link; re-raises a loop failure."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._stopping.set()
            self._wake()
            thread.join(timeout=_CALL_TIMEOUT_S)
        self._run_calls()  # anything queued while the loop was ending
        self._unplug()
        for fd in (self._wake_read, self._wake_write):
            if fd >= 0:
                os.close(fd)
        if self._error is not None:
            raise RuntimeError("firmware emulator loop failed") from self._error

    def __enter__(self) -> FirmwareEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- fault injection and the physical world -----------------------------------------------
    def unplug(self) -> None:
        """The cable is pulled: the link disappears and the host's open port starts failing."""
        self._call(self._unplug)

    def replug(self) -> None:
        """The cable is back: a new pty behind the same link; the host must reopen it."""
        self._call(self._plug)

    def set_link_faults(
        self, corrupt_rate: float | None = None, drop_rate: float | None = None
    ) -> None:
        """Per-byte fault rates, applied to both directions."""

        def apply() -> None:
            for faults in (self._rx_faults, self._tx_faults):
                faults.configure(
                    faults.corrupt_rate if corrupt_rate is None else corrupt_rate,
                    faults.drop_rate if drop_rate is None else drop_rate,
                )

        self._call(apply)

    def set_stuck_lock(self, stuck: bool) -> None:
        """A jammed bolt: lock commands fail (NAK LOCK_FAULT) and the lock reports FAULT."""

        def apply() -> None:
            self._model.stuck_lock = stuck

        self._call(apply)

    def set_estop(self, active: bool) -> None:
        self._call(lambda: self._model.set_estop(active, time.monotonic()))

    def open_door(self) -> bool:
        """Returns whether the door opened (it cannot while the bolt is engaged)."""
        return self._call(lambda: self._model.open_door(time.monotonic()))

    def close_door(self) -> None:
        self._call(lambda: self._model.close_door(time.monotonic()))

    def set_charger(self, connected: bool) -> None:
        self._call(lambda: self._model.set_charger(connected, time.monotonic()))

    # -- observation --------------------------------------------------------------------------
    def snapshot(self) -> EmulatorSnapshot:
        return self._call(self._snapshot)

    def commands(self) -> list[CommandRecord]:
        """Every host command the firmware decoded, oldest first (bounded log)."""
        return self._call(lambda: list(self._model.commands))

    @property
    def port_path(self) -> str | None:
        port = self._port
        return None if port is None else port.path

    # -- the loop thread ----------------------------------------------------------------------
    def _call(self, function: Callable[[], _T]) -> _T:
        """Run `function` on the loop thread (or here, if the loop is not running) and wait."""
        thread = self._thread
        if thread is None or not thread.is_alive() or threading.current_thread() is thread:
            return function()
        future: Future[_T] = Future()
        self._calls.put((function, future))  # type: ignore[arg-type]
        self._wake()
        return future.result(timeout=_CALL_TIMEOUT_S)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"\0")

    def _run_calls(self) -> None:
        while True:
            try:
                function, future = self._calls.get_nowait()
            except Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function())
            except BaseException as error:  # handed to the caller's thread
                future.set_exception(error)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._model.step(time.monotonic())
                self._flush()
                port = self._port
                fds = [self._wake_read] if port is None else [self._wake_read, port.master]
                readable = self._wait(fds)
                if port is not None and port.master in readable:
                    self._receive(port)
                if self._wake_read in readable:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, 4096)
                    self._run_calls()
        except BaseException as error:  # reported by stop(), not lost in a thread
            self._error = error

    def _wait(self, fds: list[int]) -> list[int]:
        """select() until input or the model's next deadline. The watchdog is a timer
        interrupt on the MCU, while a thread wakes by its scheduling latency late (0.1-2 ms
        here), so for the watchdog the thread wakes `_WATCHDOG_LEAD` early and polls the port
        until the deadline: the brake lands within microseconds of it, and a command that
        arrives meanwhile still feeds the watchdog in time."""
        model = self._model
        watchdog = model.watchdog_deadline()
        deadline = model.next_deadline()
        if watchdog > deadline:
            timeout = max(0.0, deadline - time.monotonic())
            return select.select(fds, [], [], timeout)[0]
        timeout = max(0.0, watchdog - _WATCHDOG_LEAD - time.monotonic())
        readable: list[int] = select.select(fds, [], [], timeout)[0]
        while not readable and time.monotonic() < watchdog:
            readable = select.select(fds, [], [], 0.0)[0]
        return readable

    def _receive(self, port: _Port) -> None:
        try:
            data = os.read(port.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        for frame in self._parser.feed(self._rx_faults.apply(data)):
            self._model.receive(frame, time.monotonic())
        self._flush()

    def _flush(self) -> None:
        messages = self._model.take_outbox()
        port = self._port
        if port is None or not messages:
            return  # unplugged: what the firmware says goes nowhere
        wire = b"".join(encode_frame(message, self._tx_seq.next()) for message in messages)
        data = self._tx_faults.apply(wire)
        try:
            written = os.write(port.master, data)
        except (BlockingIOError, OSError):
            written = 0
        self._tx_overflow += len(data) - written

    def _plug(self) -> None:
        if self._port is not None:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before the host configures the port
        os.set_blocking(master, False)
        port = _Port(master, slave, os.ttyname(slave))
        self.link.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(port.path, temporary)
        os.replace(temporary, self.link)  # atomic: the link never points at nothing
        self._port = port
        self._parser.reset()
        self._model.announce(time.monotonic())
        self._flush()

    def _unplug(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        with contextlib.suppress(OSError):
            if os.readlink(self.link) == port.path:
                self.link.unlink()
        for fd in (port.master, port.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._model.take_outbox()

    def _snapshot(self) -> EmulatorSnapshot:
        model = self._model
        now = time.monotonic()
        model.step(now)
        left, right = model.wheels
        return EmulatorSnapshot(
            time=now,
            wheel_velocities=(left.velocity, right.velocity),
            wheel_targets=(left.target, right.target),
            wheel_ticks=model.ticks(),
            motors_enabled=model.motors_enabled,
            watchdog_tripped=model.watchdog_tripped,
            estop_active=model.estop_active,
            last_velocity_command_at=model.last_velocity_command_at,
            motors_stopped_at=model.motors_stopped_at,
            watchdog_trips=model.watchdog_trips,
            watchdog_late=model.watchdog_late,
            lock_status=model.lock_status,
            bolt_engaged=model.bolt_engaged,
            door_open=model.door_open,
            stuck_lock=model.stuck_lock,
            state_of_charge=model.state_of_charge,
            battery_voltage=model.battery_voltage(),
            battery_current=model.battery_current,
            charger_connected=model.charger_connected,
            plugged=self._port is not None,
            port_path=self.port_path,
            rx=replace(self._parser.stats),
            rx_corrupted_bytes=self._rx_faults.corrupted,
            rx_dropped_bytes=self._rx_faults.dropped,
            tx_corrupted_bytes=self._tx_faults.corrupted,
            tx_dropped_bytes=self._tx_faults.dropped,
            tx_overflow_bytes=self._tx_overflow,
        )


# -- manual use ---------------------------------------------------------------------------------
CONSOLE_HELP = """commands:
  status                 show the emulated robot and link
  estop on|off           press / release the hardware e-stop
  door open|close        pull the compartment door / shut it
  stuck on|off           jam / free the lock bolt
  charger on|off         connect / disconnect the charger
  corrupt RATE           per-byte corruption rate, both directions (e.g. 0.001)
  drop RATE              per-byte drop rate, both directions
  unplug | replug        pull / reconnect the cable
  quit"""


def console_command(emulator: FirmwareEmulator, line: str) -> bool:
    """Run one console line (also `delivery-robot --emulate`'s console); returns False when
    the user asked to quit."""
    words = line.split()
    if not words:
        return True
    verb, argument = words[0], (words[1] if len(words) > 1 else "")
    switch = argument in ("on", "1", "true")
    try:
        if verb == "quit":
            return False
        if verb == "status":
            print(emulator.snapshot())
        elif verb == "estop":
            emulator.set_estop(switch)
        elif verb == "door":
            if argument == "open":
                print("door opened" if emulator.open_door() else "door is locked")
            else:
                emulator.close_door()
        elif verb == "stuck":
            emulator.set_stuck_lock(switch)
        elif verb == "charger":
            emulator.set_charger(switch)
        elif verb == "corrupt":
            emulator.set_link_faults(corrupt_rate=float(argument))
        elif verb == "drop":
            emulator.set_link_faults(drop_rate=float(argument))
        elif verb == "unplug":
            emulator.unplug()
        elif verb == "replug":
            emulator.replug()
            print(f"{emulator.link} -> {emulator.port_path}")
        else:
            print(CONSOLE_HELP)
    except ValueError as error:
        print(f"error: {error}")
    sys.stdout.flush()
    return True


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m delivery_robot.firmware_emulator",
        description="Emulated motor/lock controller on a pseudo-terminal (see "
        "docs/serial_protocol.md). Point the driver's serial_port at --link.",
    )
    parser.add_argument(
        "--link", required=True, help="symlink to create for the pty, e.g. /tmp/emu/ttyEMU"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection")
    parser.add_argument("--corrupt-rate", type=float, default=0.0, help="per-byte, both ways")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="per-byte, both ways")
    parser.add_argument("--stuck-lock", action="store_true", help="start with a jammed lock")
    args = parser.parse_args(argv)
    emulator = FirmwareEmulator(
        args.link,
        seed=args.seed,
        corrupt_rate=args.corrupt_rate,
        drop_rate=args.drop_rate,
        stuck_lock=args.stuck_lock,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    emulator.start()
    print(f"firmware emulator ready: {emulator.link} -> {emulator.port_path}", flush=True)
    print("type 'help' for commands, Ctrl-C to stop", flush=True)
    try:
        for line in sys.stdin:
            if not console_command(emulator, line):
                break
        else:
            while True:  # stdin closed (run in the background): serve until signalled
                signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
