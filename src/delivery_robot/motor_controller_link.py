"""The host side of the motor/lock controller protocol (docs/serial_protocol.md), without I/O.

`MotorControllerLink` is everything the base driver decides about the link: the connection
handshake (ask for the firmware version, since pyserial flushed the MCU's announcement on open),
streaming wheel velocities at the control rate, acknowledged commands (motor enable, lock) with
retries every 100 ms and at most one outstanding per type, odometry from encoder reports,
battery / lock / door / e-stop state, heartbeat round-trip time and link-quality counters.

It never touches a port or a clock: bytes and `now` (monotonic seconds) come in, frames to write
(`take_outgoing`) and events for the ROS node (`take_events`) come out. The I/O thread
(`serial_port_worker.SerialPortWorker`) owns the port and calls it under a lock; tests drive it
with simulated time and the firmware model.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from enum import Enum
from random import Random
from typing import Final, TypeAlias

from delivery_robot.diff_drive import DiffDriveGeometry, OdometryEstimate, OdometryIntegrator
from delivery_robot.serial_protocol import (
    ACKED_TYPES,
    PROTOCOL_VERSION,
    Ack,
    BatteryReport,
    EncoderReport,
    EstopState,
    FirmwareVersion,
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

_U32: Final = 1 << 32
SUPERSEDED: Final = "superseded by a newer command"  # CommandDone.detail of an overtaken one
_RTT_WINDOW: Final = 50  # heartbeat round trips kept for the diagnostics' mean and max
_SENT_VELOCITIES_KEPT: Final = 64  # velocity SEQs remembered to time their effect


@dataclass(frozen=True)
class LinkConfig:
    """Timing of the host side; defaults are the protocol document's."""

    control_period: float = 0.02  # s, WHEEL_VELOCITY stream (50 Hz)
    heartbeat_period: float = 0.2  # s (5 Hz)
    ack_retry_period: float = 0.1  # s between tries of an acked command
    ack_max_tries: int = 10
    request_retry_period: float = 0.1  # s between FIRMWARE_VERSION requests until answered
    command_timeout: float = 0.5  # s without set_twist -> stream zeros
    link_timeout: float = 1.0  # s without a valid frame -> the link is stale (reopen it)
    reenable_period: float = 1.0  # s between enables when the MCU reports motors off unasked

    def __post_init__(self) -> None:
        for name in (
            "control_period",
            "heartbeat_period",
            "ack_retry_period",
            "request_retry_period",
            "command_timeout",
            "link_timeout",
            "reenable_period",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.ack_max_tries < 1:
            raise ValueError("ack_max_tries must be >= 1")

    @property
    def ack_span(self) -> float:
        """How long an acked command is tried before it is reported as not answered."""
        return self.ack_retry_period * self.ack_max_tries


class LinkState(Enum):
    DISCONNECTED = "disconnected"  # no port open
    HANDSHAKE = "handshake"  # port open, waiting for FIRMWARE_VERSION
    READY = "ready"  # firmware speaks our protocol: commands flow
    INCOMPATIBLE = "incompatible"  # firmware of another protocol version: nothing is sent


# -- events for the node ---------------------------------------------------------------------
@dataclass(frozen=True)
class OdometryUpdated:
    estimate: OdometryEstimate
    received_at: float  # host monotonic time the report was decoded


@dataclass(frozen=True)
class BatteryUpdated:
    report: BatteryReport
    received_at: float


@dataclass(frozen=True)
class CompartmentChanged:
    lock_status: LockStatus | None  # None until the MCU has reported
    door_open: bool | None


@dataclass(frozen=True)
class EstopChanged:
    active: bool


@dataclass(frozen=True)
class LinkStateChanged:
    state: LinkState
    detail: str
    firmware: FirmwareVersion | None


@dataclass(frozen=True)
class CommandDone:
    """An acked command finished: ACK (ok), NAK (refused, with reason) or no answer in time."""

    ticket: int
    message: MotorEnable | LockCommand
    ok: bool
    detail: str
    lock_status: LockStatus | None  # compartment as known when it finished
    door_open: bool | None


LinkEvent: TypeAlias = (
    OdometryUpdated
    | BatteryUpdated
    | CompartmentChanged
    | EstopChanged
    | LinkStateChanged
    | CommandDone
)


@dataclass(frozen=True)
class LinkStatus:
    """Everything the diagnostics report, copied at one instant."""

    state: LinkState
    firmware: FirmwareVersion | None
    connects: int
    rx: ParserStats
    tx_frames: int
    tx_bytes: int
    ack_retries: int
    ack_timeouts: int
    naks: int
    stray_replies: int  # ACK/NAK matching no outstanding command (late answers to retries)
    watchdog_trips: int  # MCU reported its watchdog tripped (rising edges)
    odometry_resets: int
    heartbeats_answered: int  # round trips measured so far
    rtt_samples_ms: tuple[float, ...]  # the last 50 round trips, oldest first
    rtt_last_ms: float | None
    rtt_mean_ms: float | None
    rtt_max_ms: float | None
    command_latency_ms: float | None  # velocity sent -> reported applied (incl. report period)
    last_frame_age: float | None  # s since the last valid frame
    motors_wanted: bool
    motors_enabled: bool | None  # as the MCU reports it
    estop_active: bool | None
    estop_latched: bool  # e-stop seen: motors stay off until set_motors(True) again
    lock_status: LockStatus | None
    door_open: bool | None
    battery: BatteryReport | None
    pending_commands: int


@dataclass
class _Outstanding:
    ticket: int
    message: MotorEnable | LockCommand
    frame: bytes  # retries resend exactly this (same SEQ, same payload)
    seq: int
    deadline: float
    tries: int = 0
    next_try: float = -math.inf


class MotorControllerLink:
    """Protocol session with one MCU; see the module docstring. Not thread-safe by itself."""

    def __init__(
        self,
        geometry: DiffDriveGeometry,
        config: LinkConfig | None = None,
        *,
        now: float,
        seq_start: int | None = None,
        rng: Random | None = None,
    ) -> None:
        self.geometry = geometry
        self.config = config or LinkConfig()
        self.state = LinkState.DISCONNECTED
        self.firmware: FirmwareVersion | None = None
        self.odometry = OdometryIntegrator(geometry)
        self._origin = now  # heartbeat uptime_ms counts from here
        self._seq = SequenceCounter(seq_start, rng)
        self._parser = FrameParser()
        self._outgoing = bytearray()
        self._events: list[LinkEvent] = []
        self._outstanding: dict[MessageType, _Outstanding] = {}
        self._next_ticket = 1
        # what the host wants
        self._motors_wanted = False
        self._estop_latched = False
        self._twist = (0.0, 0.0)
        self._twist_at = -math.inf
        # what the MCU reported
        self.motors_enabled: bool | None = None
        self.estop_active: bool | None = None
        self.lock_status: LockStatus | None = None
        self.door_open: bool | None = None
        self.battery: BatteryReport | None = None
        self._watchdog_tripped = False
        self._enable_confirmed_at = -math.inf
        # schedule
        self._next_velocity = math.inf
        self._next_heartbeat = math.inf
        self._next_version_request = math.inf
        self._last_frame_at: float | None = None
        # diagnostics
        self._connects = 0
        self._tx_frames = 0
        self._tx_bytes = 0
        self._ack_retries = 0
        self._ack_timeouts = 0
        self._naks = 0
        self._stray_replies = 0
        self._watchdog_trips = 0
        self._heartbeats_sent: dict[int, float] = {}
        self._mcu_uptime_ms = 0
        self._rtts: deque[float] = deque(maxlen=_RTT_WINDOW)
        self._heartbeats_answered = 0
        self._velocity_sent: dict[int, float] = {}
        self._applied_seq: int | None = None
        self._command_latency: float | None = None

    # -- what the node asks for -------------------------------------------------------------
    def set_twist(self, linear: float, angular: float, now: float) -> None:
        """New body velocity (m/s, rad/s). Queued at once, not at the next control tick, so a
        command reaches the wire without waiting up to a period; then repeated every period."""
        if not (math.isfinite(linear) and math.isfinite(angular)):
            raise ValueError(f"twist must be finite, got ({linear!r}, {angular!r})")
        self._twist = (linear, angular)
        self._twist_at = now
        if self._streaming:
            self._send_velocity(now)

    def set_motors(self, enable: bool, now: float) -> int:
        """Power stage on (lifecycle activate) or off (deactivate and every exit path).

        Enabling is also the deliberate reset after an e-stop: it clears the e-stop latch and
        any old twist, so the robot does not resume a command from before the stop. Disabling
        first sends zero wheel speeds. Returns the ticket of the MOTOR_ENABLE command."""
        self._motors_wanted = enable
        self._twist = (0.0, 0.0)
        self._twist_at = -math.inf
        if enable:
            self._estop_latched = False
            self._next_velocity = now
        else:
            self._next_velocity = math.inf
            if self.state is LinkState.READY:
                self._send(WheelVelocityCommand(0.0, 0.0), now)
        return self._command(MotorEnable(enable), now, self.config.ack_span)

    def request_lock(self, action: LockAction, now: float, timeout: float | None = None) -> int:
        """Queue a lock command; a `CommandDone` with the returned ticket follows (ACK, NAK or
        no answer). A newer lock request supersedes an outstanding one (which fails)."""
        span = self.config.ack_span if timeout is None else timeout
        return self._command(LockCommand(action), now, span)

    def secure(self, now: float) -> list[int]:
        """Every exit path: wheels to zero, motors off, and lock the compartment unless the door
        is known to be open (the MCU refuses a lock into an open door anyway)."""
        tickets = [self.set_motors(False, now)]
        pending = self._outstanding.get(MessageType.LOCK_COMMAND)
        unlocking = pending is not None and pending.message == LockCommand(LockAction.UNLOCK)
        if self.door_open is not True and (self.lock_status is not LockStatus.LOCKED or unlocking):
            # (An unlock still in flight may yet open the bolt: lock after it, superseding it.)
            tickets.append(self.request_lock(LockAction.LOCK, now))
        return tickets

    def abort_commands(self, detail: str) -> None:
        """Fail every outstanding command (the port is being closed for good)."""
        for kind in list(self._outstanding):
            self._finish(kind, ok=False, detail=detail)

    @property
    def pending_commands(self) -> int:
        return len(self._outstanding)

    # -- what the port reports --------------------------------------------------------------
    def on_connected(self, now: float) -> None:
        """The port was (re)opened: start the handshake (steps 1-3 of the connection sequence)."""
        self._parser.reset()
        self.odometry.rebaseline()
        self._connects += 1
        self._outgoing.clear()
        self._last_frame_at = now  # the link timeout counts from the open
        self._heartbeats_sent.clear()
        self._set_state(LinkState.HANDSHAKE, "port open, asking for the firmware version", now)
        self._next_version_request = now
        self._next_heartbeat = now
        self.tick(now)  # REQUEST(FIRMWARE_VERSION) first, then the state reports
        for report in (MessageType.LOCK_STATE, MessageType.ESTOP_STATE, MessageType.BATTERY_REPORT):
            self._send(Request(report), now)

    def on_disconnected(self, now: float, reason: str) -> None:
        """The port failed or was closed. Outstanding commands keep their deadlines: a lock
        request may still go through if the port is back in time."""
        self._outgoing.clear()
        self._next_version_request = self._next_heartbeat = math.inf
        self._set_state(LinkState.DISCONNECTED, reason, now)

    def on_bytes(self, data: bytes, now: float) -> None:
        for frame in self._parser.feed(data):
            self._last_frame_at = now
            self._on_message(frame.message, now)
        self.tick(now)

    def stale(self, now: float) -> bool:
        """Connected but no valid frame for `link_timeout`: reopen the port (a USB adapter that
        hung, or the wrong device)."""
        return (
            self.state is not LinkState.DISCONNECTED
            and self._last_frame_at is not None
            and now - self._last_frame_at > self.config.link_timeout
        )

    # -- time -------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Do whatever is due: version requests, heartbeats, velocity stream, retries."""
        if self.state is LinkState.HANDSHAKE and now >= self._next_version_request:
            self._send(Request(MessageType.FIRMWARE_VERSION), now)
            self._next_version_request = now + self.config.request_retry_period
        if self.state in (LinkState.HANDSHAKE, LinkState.READY) and now >= self._next_heartbeat:
            uptime_ms = round((now - self._origin) * 1000) % _U32
            self._heartbeats_sent[uptime_ms] = now
            while len(self._heartbeats_sent) > 8:
                del self._heartbeats_sent[next(iter(self._heartbeats_sent))]
            self._send(Heartbeat(uptime_ms, self._mcu_uptime_ms), now)
            period = self.config.heartbeat_period
            self._next_heartbeat = _next_due(self._next_heartbeat, period, now)
        if self._streaming and now >= self._next_velocity:
            self._send_velocity(now)
        for kind in list(self._outstanding):
            self._service_command(kind, now)

    def next_deadline(self) -> float:
        """When `tick` must next run (monotonic seconds; inf if nothing is scheduled)."""
        due = [math.inf]
        if self.state in (LinkState.HANDSHAKE, LinkState.READY):
            due.append(self._next_heartbeat)
        if self.state is LinkState.HANDSHAKE:
            due.append(self._next_version_request)
        if self._streaming:
            due.append(self._next_velocity)
        for command in self._outstanding.values():
            due.append(command.deadline)
            if self.state is LinkState.READY:
                due.append(command.next_try)
        return min(due)

    # -- outputs ----------------------------------------------------------------------------
    def take_outgoing(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def take_events(self) -> list[LinkEvent]:
        events, self._events = self._events, []
        return events

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def status(self, now: float) -> LinkStatus:
        rtts = list(self._rtts)
        return LinkStatus(
            state=self.state,
            firmware=self.firmware,
            connects=self._connects,
            rx=replace(self._parser.stats),
            tx_frames=self._tx_frames,
            tx_bytes=self._tx_bytes,
            ack_retries=self._ack_retries,
            ack_timeouts=self._ack_timeouts,
            naks=self._naks,
            stray_replies=self._stray_replies,
            watchdog_trips=self._watchdog_trips,
            odometry_resets=self.odometry.resets,
            heartbeats_answered=self._heartbeats_answered,
            rtt_samples_ms=tuple(rtt * 1000 for rtt in rtts),
            rtt_last_ms=rtts[-1] * 1000 if rtts else None,
            rtt_mean_ms=sum(rtts) / len(rtts) * 1000 if rtts else None,
            rtt_max_ms=max(rtts) * 1000 if rtts else None,
            command_latency_ms=None
            if self._command_latency is None
            else self._command_latency * 1000,
            last_frame_age=None if self._last_frame_at is None else now - self._last_frame_at,
            motors_wanted=self._motors_wanted,
            motors_enabled=self.motors_enabled,
            estop_active=self.estop_active,
            estop_latched=self._estop_latched,
            lock_status=self.lock_status,
            door_open=self.door_open,
            battery=self.battery,
            pending_commands=len(self._outstanding),
        )

    # -- internals --------------------------------------------------------------------------
    @property
    def _streaming(self) -> bool:
        return self._motors_wanted and self.state is LinkState.READY

    def _wheel_target(self, now: float) -> tuple[float, float]:
        if self._estop_latched or now - self._twist_at > self.config.command_timeout:
            return 0.0, 0.0
        return self.geometry.wheel_speeds(*self._twist)

    def _send_velocity(self, now: float) -> None:
        left, right = self._wheel_target(now)
        seq = self._send(WheelVelocityCommand(left, right), now)
        self._velocity_sent[seq] = now
        while len(self._velocity_sent) > _SENT_VELOCITIES_KEPT:
            del self._velocity_sent[next(iter(self._velocity_sent))]
        # Fixed rate from the last send: a twist sent at once restarts the period.
        self._next_velocity = now + self.config.control_period

    def _send(self, message: Message, now: float) -> int:
        seq = self._seq.next()
        self._write(encode_frame(message, seq))
        return seq

    def _write(self, frame: bytes) -> None:
        if self.state is LinkState.DISCONNECTED:
            return
        self._outgoing += frame
        self._tx_frames += 1
        self._tx_bytes += len(frame)

    def _command(self, message: MotorEnable | LockCommand, now: float, span: float) -> int:
        kind = message.TYPE
        if kind in self._outstanding:
            self._finish(kind, ok=False, detail=SUPERSEDED)
        ticket = self._next_ticket
        self._next_ticket += 1
        seq = self._seq.next()
        self._outstanding[kind] = _Outstanding(
            ticket, message, encode_frame(message, seq), seq, deadline=now + span
        )
        self._service_command(kind, now)
        return ticket

    def _service_command(self, kind: MessageType, now: float) -> None:
        command = self._outstanding[kind]
        ready = self.state is LinkState.READY
        if now >= command.deadline or (
            ready and now >= command.next_try and command.tries >= self.config.ack_max_tries
        ):
            self._ack_timeouts += 1
            if command.tries:
                detail = f"no answer from the controller after {command.tries} tries"
            else:
                detail = f"not sent: link {self.state.value}"
            self._finish(kind, ok=False, detail=detail)
        elif ready and now >= command.next_try:
            if command.tries:
                self._ack_retries += 1
            command.tries += 1
            command.next_try = now + self.config.ack_retry_period
            self._write(command.frame)

    def _finish(self, kind: MessageType, ok: bool, detail: str) -> None:
        command = self._outstanding.pop(kind)
        self._emit(CommandDone(
            command.ticket, command.message, ok, detail, self.lock_status, self.door_open
        ))

    def _emit(self, event: LinkEvent) -> None:
        """Queue an event for the node. If the node stops draining them, old odometry and
        battery samples are dropped first, never a command result or a state change."""
        self._events.append(event)
        if len(self._events) > _MAX_EVENTS:
            self._events = [e for e in self._events if not isinstance(e, _SAMPLE_EVENTS)]
            del self._events[: max(0, len(self._events) - _MAX_EVENTS // 2)]

    def _set_state(self, state: LinkState, detail: str, now: float) -> None:
        if state is not self.state:
            self.state = state
            self._emit(LinkStateChanged(state, detail, self.firmware))

    def _on_message(self, message: Message, now: float) -> None:
        if isinstance(message, EncoderReport):
            self._on_encoder(message, now)
        elif isinstance(message, Ack | Nak):
            self._on_reply(message, now)
        elif isinstance(message, Heartbeat):
            self._mcu_uptime_ms = message.uptime_ms
            sent_at = self._heartbeats_sent.pop(message.echo_ms, None)
            if sent_at is not None:
                self._rtts.append(now - sent_at)
                self._heartbeats_answered += 1
        elif isinstance(message, LockState):
            self._set_compartment(message.status, message.door_open)
        elif isinstance(message, EstopState):
            self._set_estop(message.active)
        elif isinstance(message, BatteryReport):
            self.battery = message
            self._emit(BatteryUpdated(message, now))
        elif isinstance(message, FirmwareVersion):
            self._on_firmware(message, now)
        # Host->MCU types coming back are ignored (a loop-back cable, say): nothing to act on.

    def _on_firmware(self, version: FirmwareVersion, now: float) -> None:
        self.firmware = version
        if version.protocol != PROTOCOL_VERSION:
            self._set_state(
                LinkState.INCOMPATIBLE,
                f"firmware speaks protocol {version.protocol}, this driver {PROTOCOL_VERSION}",
                now,
            )
            return
        if self.state is LinkState.HANDSHAKE:
            self._set_state(LinkState.READY, "firmware version received", now)
            # Step 4/5: the MCU may have rebooted or been left enabled by a crashed host, so
            # tell it what this host wants; and start streaming from the current twist.
            # (An enable or disable already queued goes out now and says it.)
            if MessageType.MOTOR_ENABLE not in self._outstanding and not (
                self._motors_wanted and self._estop_latched
            ):
                self._command(MotorEnable(self._motors_wanted), now, self.config.ack_span)
            self._next_velocity = now

    def _on_encoder(self, report: EncoderReport, now: float) -> None:
        self._set_estop(report.estop_active)
        self.motors_enabled = report.motors_enabled
        if report.watchdog_tripped and not self._watchdog_tripped:
            self._watchdog_trips += 1
        self._watchdog_tripped = report.watchdog_tripped
        if report.applied_seq != self._applied_seq:
            self._applied_seq = report.applied_seq
            sent_at = self._velocity_sent.get(report.applied_seq)
            if sent_at is not None:
                self._command_latency = now - sent_at
        estimate = self.odometry.update(report.mcu_time_us, report.left_ticks, report.right_ticks)
        self._emit(OdometryUpdated(estimate, now))
        self._reconcile_enable(now)

    def _reconcile_enable(self, now: float) -> None:
        """The MCU reports its motors off although this host enabled them and no e-stop was
        seen (it rebooted without the port closing): enable again, at most once a period."""
        if (
            self.state is LinkState.READY
            and self._motors_wanted
            and not self._estop_latched
            and self.motors_enabled is False
            and not self.estop_active
            and MessageType.MOTOR_ENABLE not in self._outstanding
            and now - self._enable_confirmed_at > self.config.reenable_period
        ):
            self._enable_confirmed_at = now
            self._command(MotorEnable(True), now, self.config.ack_span)

    def _on_reply(self, reply: Ack | Nak, now: float) -> None:
        kind = reply.message_type
        command = self._outstanding.get(MessageType(kind)) if kind in _ACKED_CODES else None
        if command is None or command.seq != reply.seq:
            self._stray_replies += 1  # e.g. the second ACK of a retried command
            return
        message = command.message
        if isinstance(reply, Ack):
            if isinstance(message, LockCommand):
                # "ACK means the bolt is where it was asked to be"; a LOCK_STATE follows.
                locked = message.action is LockAction.LOCK
                self._set_compartment(
                    LockStatus.LOCKED if locked else LockStatus.UNLOCKED, self.door_open
                )
            else:
                self._enable_confirmed_at = now
            self._finish(message.TYPE, ok=True, detail="acknowledged")
            return
        self._naks += 1
        if reply.reason is NakReason.LOCK_FAULT:
            self._set_compartment(LockStatus.FAULT, self.door_open)
        if reply.reason is NakReason.ESTOP_ACTIVE:
            self._estop_latched = self._motors_wanted
        self._finish(message.TYPE, ok=False, detail=f"refused: {_NAK_TEXT[reply.reason]}")

    def _set_compartment(self, status: LockStatus, door_open: bool | None) -> None:
        if (status, door_open) != (self.lock_status, self.door_open):
            self.lock_status, self.door_open = status, door_open
            self._emit(CompartmentChanged(status, door_open))

    def _set_estop(self, active: bool) -> None:
        if active and self._motors_wanted:
            # Releasing the e-stop must not restart the robot: stay off until set_motors(True).
            self._estop_latched = True
            self._twist = (0.0, 0.0)
        if active != self.estop_active:
            self.estop_active = active
            self._emit(EstopChanged(active))


_MAX_EVENTS: Final = 1000
_SAMPLE_EVENTS: Final = (OdometryUpdated, BatteryUpdated)
_ACKED_CODES: Final = frozenset(int(kind) for kind in ACKED_TYPES)
_NAK_TEXT: Final = {
    NakReason.UNSUPPORTED: "unsupported by the firmware",
    NakReason.LOCK_FAULT: "lock fault (the bolt did not move)",
    NakReason.DOOR_OPEN: "the door is open",
    NakReason.ESTOP_ACTIVE: "the e-stop is pressed",
}


def _next_due(due: float, period: float, now: float) -> float:
    """Fixed rate; after a stall skip the missed slots instead of sending a burst."""
    due += period
    return due if due > now else now + period
