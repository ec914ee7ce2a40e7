"""Binary protocol between the robot computer and the motor/lock microcontroller (MCU).

The byte-level specification is docs/serial_protocol.md; this module is its one implementation,
shared by the base_driver node, the firmware emulator and the tests. It is pure Python (no rclpy,
no pyserial) so the framing can be property-tested in isolation.

Frame: START(0xA5) LEN VER TYPE SEQ(u16) PAYLOAD[LEN] CRC16, little-endian, CRC-16/CCITT-FALSE
over LEN..PAYLOAD. Values are SI (rad/s, V, A) in the dataclasses and fixed-point on the wire.
"""

from __future__ import annotations

import binascii
import math
import struct
from dataclasses import dataclass, fields
from enum import IntEnum
from random import Random
from typing import ClassVar, Final, Self, TypeAlias

START_BYTE: Final = 0xA5
PROTOCOL_VERSION: Final = 1
HEADER_SIZE: Final = 6  # START, LEN, VER, TYPE, SEQ (2)
CRC_SIZE: Final = 2
MAX_PAYLOAD: Final = 48
MAX_FRAME_SIZE: Final = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
SEQ_MODULO: Final = 1 << 16

VELOCITY_SCALE: Final = 1000  # wire counts per rad/s (1 mrad/s resolution)
VOLTAGE_SCALE: Final = 1000  # counts per V (mV)
CURRENT_SCALE: Final = 100  # counts per A (10 mA, so +-327 A fits an int16)
CHARGE_SCALE: Final = 1000  # counts per unit state of charge (permille)

_HEADER = struct.Struct("<BBBBH")
_BODY_HEADER = struct.Struct("<BBBH")  # the CRC-covered part of the header: LEN VER TYPE SEQ
_START = bytes([START_BYTE])
_CRC = struct.Struct("<H")


def crc16_ccitt_false(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor).

    Chosen because every MCU vendor library and most CRC calculators have it, and with
    Hamming distance 4 up to 32 kbit it catches every 1-3 bit error and every burst up to
    16 bits in our <= 56-byte frames. Check value: crc16_ccitt_false(b"123456789") == 0x29B1.
    `binascii.crc_hqx` is this CRC computed in C (a Python loop per byte cost ~3 us a frame
    on both ends of every round trip).
    """
    return binascii.crc_hqx(data, crc)


class MessageType(IntEnum):
    """Wire TYPE codes: 0x01-0x3F host->MCU, 0x40-0x7F both ways, 0x80-0xBF MCU->host."""

    WHEEL_VELOCITY = 0x01
    MOTOR_ENABLE = 0x02
    LOCK_COMMAND = 0x03
    REQUEST = 0x04
    HEARTBEAT = 0x40
    ENCODER_REPORT = 0x81
    BATTERY_REPORT = 0x82
    LOCK_STATE = 0x83
    ESTOP_STATE = 0x84
    FIRMWARE_VERSION = 0x85
    ACK = 0x86
    NAK = 0x87


# Commands the sender retries until the MCU answers ACK or NAK with the same TYPE and SEQ.
ACKED_TYPES: Final = frozenset({MessageType.MOTOR_ENABLE, MessageType.LOCK_COMMAND})


class LockAction(IntEnum):
    UNLOCK = 0
    LOCK = 1


class LockStatus(IntEnum):
    UNLOCKED = 0
    LOCKED = 1
    FAULT = 2  # the last lock command failed: the bolt position is not what was asked


class NakReason(IntEnum):
    UNSUPPORTED = 1  # a REQUEST for a report this firmware does not have
    LOCK_FAULT = 2  # the bolt did not move (jammed lock, actuator fault)
    DOOR_OPEN = 3  # locking with the door open would leave the compartment unsecured
    ESTOP_ACTIVE = 4  # motors cannot be enabled while the e-stop is pressed


class DecodeError(ValueError):
    """A frame with a valid CRC whose payload breaks the spec (bad enum or bool value)."""


def _fixed(value: float, scale: int, bits: int, signed: bool, what: str) -> int:
    """SI value -> fixed-point integer; out-of-range values are the caller's bug, not clipped."""
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    count = round(value * scale)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= count <= high:
        wire_range = f"[{low / scale}, {high / scale}]"
        raise ValueError(f"{what}={value!r} does not fit the wire range {wire_range}")
    return count


def _flag(byte: int, what: str) -> bool:
    if byte not in (0, 1):
        raise DecodeError(f"{what} must be 0 or 1, got {byte}")
    return byte == 1


def _enum(enum: type[IntEnum], value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        raise DecodeError(f"{value} is not a valid {enum.__name__}") from None


# Field names per message class, looked up once: dataclasses.fields() on every encode was
# a third of the cost of framing a message.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class _MessageBase:
    """Shared encode/decode plumbing; each message declares its TYPE and struct layout."""

    TYPE: ClassVar[MessageType]
    LAYOUT: ClassVar[struct.Struct]

    def wire_values(self) -> tuple[int, ...]:
        """The payload fields as wire integers, in LAYOUT order (identity for integer fields)."""
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = tuple(f.name for f in fields(self))  # type: ignore[arg-type]
            _FIELD_NAMES[type(self)] = names
        return tuple([int(getattr(self, name)) for name in names])

    @classmethod
    def from_wire(cls, values: tuple[int, ...]) -> Self:
        return cls(*values)

    def encode_payload(self) -> bytes:
        try:
            return self.LAYOUT.pack(*self.wire_values())
        except struct.error as error:
            raise ValueError(f"{self!r} does not fit its wire format: {error}") from None

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        return cls.from_wire(cls.LAYOUT.unpack(payload))


@dataclass(frozen=True)
class WheelVelocityCommand(_MessageBase):
    """Target wheel speeds, streamed at the control rate: a lost one is replaced by the next,
    and the MCU watchdog stops the motors if they stop coming, so it is not acknowledged.
    Positive speeds drive the robot forward on both sides (the firmware handles mirroring)."""

    left: float  # rad/s
    right: float  # rad/s

    TYPE: ClassVar[MessageType] = MessageType.WHEEL_VELOCITY
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<ii")

    def wire_values(self) -> tuple[int, ...]:
        return (
            _fixed(self.left, VELOCITY_SCALE, 32, True, "left"),
            _fixed(self.right, VELOCITY_SCALE, 32, True, "right"),
        )

    @classmethod
    def from_wire(cls, values: tuple[int, ...]) -> Self:
        left, right = values
        return cls(left / VELOCITY_SCALE, right / VELOCITY_SCALE)


@dataclass(frozen=True)
class MotorEnable(_MessageBase):
    """Power stage on/off; acknowledged because a lost disable must never leave motors live."""

    enable: bool

    TYPE: ClassVar[MessageType] = MessageType.MOTOR_ENABLE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<B")

    @classmethod
    def from_wire(cls, values: tuple[int, ...]) -> Self:
        return cls(_flag(values[0], "enable"))


@dataclass(frozen=True)
class LockCommand(_MessageBase):
    """Compartment bolt; acknowledged and deduplicated because the goods depend on it."""

    action: LockAction

    TYPE: ClassVar[MessageType] = MessageType.LOCK_COMMAND
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<B")

    @classmethod
    def from_wire(cls, values: tuple[int, ...]) -> Self:
        return cls(LockAction(_enum(LockAction, values[0])))


@dataclass(frozen=True)
class Request(_MessageBase):
    """Ask the MCU to send one report now (e.g. FIRMWARE_VERSION after connecting).

    message_type is a plain int so a newer host can ask for a type this side does not know;
    the MCU answers NAK(UNSUPPORTED) instead of the frame being dropped as malformed."""

    message_type: int

    TYPE: ClassVar[MessageType] = MessageType.REQUEST
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<B")


@dataclass(frozen=True)
class Heartbeat(_MessageBase):
    """Link liveness and round-trip time: the MCU answers each host heartbeat at once with
    echo_ms set to the host's uptime_ms, so host_now - echo_ms is the round trip."""

    uptime_ms: int  # sender's clock, wraps at 2**32
    echo_ms: int  # the peer's last uptime_ms, 0 if none

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<II")


@dataclass(frozen=True)
class EncoderReport(_MessageBase):
    """Encoder counts sampled at one MCU instant; the host derives odometry from the deltas.

    Counts and the timestamp wrap (int32 / uint32 microseconds, 71 min); the host unwraps them
    by modular differences, which is exact, unlike a float that would lose resolution.
    applied_seq is the SEQ of the velocity command in force, for command->effect latency."""

    mcu_time_us: int
    left_ticks: int
    right_ticks: int
    applied_seq: int
    motors_enabled: bool
    watchdog_tripped: bool
    estop_active: bool

    TYPE: ClassVar[MessageType] = MessageType.ENCODER_REPORT
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<IiiHB")
    FLAG_MOTORS_ENABLED: ClassVar[int] = 0x01
    FLAG_WATCHDOG_TRIPPED: ClassVar[int] = 0x02
    FLAG_ESTOP_ACTIVE: ClassVar[int] = 0x04

    def wire_values(self) -> tuple[int, ...]:
        flags = (
            (self.FLAG_MOTORS_ENABLED if self.motors_enabled else 0)
            | (self.FLAG_WATCHDOG_TRIPPED if self.watchdog_tripped else 0)
            | (self.FLAG_ESTOP_ACTIVE if self.estop_active else 0)
        )
        return (self.mcu_time_us, self.left_ticks, self.right_ticks, self.applied_seq, flags)

    @classmethod
    def from_wire(cls, values: tuple[int, ...]) -> Self:
        time_us, left, right, applied_seq, flags = values
        # Reserved flag bits are ignored so a newer firmware can add flags without a version bump.
        return cls(
            time_us,
            left,
            right,
            applied_seq,
            bool(flags & cls.FLAG_MOTORS_ENABLED),
            bool(flags & cls.FLAG_WATCHDOG_TRIPPED),
            bool(flags & cls.FLAG_ESTOP_ACTIVE),
        )


@dataclass(frozen=True)
class BatteryReport(_MessageBase):
    """Pack state; current follows sensor_msgs/BatteryState (negative while discharging)."""

    voltage: float  # V
    current: float  # A
    state_of_charge: float  # 0..1
    charger_connected: bool

    TYPE: ClassVar[MessageType] = MessageType.BATTERY_REPORT
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HhHB")

    def wire_values(self) -> tuple[int, ...]:
        if not 0.0 <= self.state_of_charge <= 1.0:
            raise ValueError(f"state_of_charge must be in [0, 1], got {self.state_of_charge!r}")
        return (
            _fixed(self.voltage, VOLTAGE_SCALE, 16, False, "voltage"),
            _fixed(self.current, CURRENT_SCALE, 16, True, "current"),
            _fixed(self.state_of_charge, CHARGE_SCALE, 16, False, "state_of_charge"),
            int(self.charger_connected),
        )

    @classmethod
    def from_wire(cls, values: tuple[int, ...]) -> Self:
        millivolts, centiamps, permille, charger = values
        if permille > CHARGE_SCALE:
            raise DecodeError(f"state of charge {permille} permille is above 1000")
        return cls(
            millivolts / VOLTAGE_SCALE,
            centiamps / CURRENT_SCALE,
            permille / CHARGE_SCALE,
            _flag(charger, "charger_connected"),
        )


@dataclass(frozen=True)
class LockState(_MessageBase):
    """Sent on every change and periodically, so a lost one is repaired within one period."""

    status: LockStatus
    door_open: bool

    TYPE: ClassVar[MessageType] = MessageType.LOCK_STATE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BB")

    @classmethod
    def from_wire(cls, values: tuple[int, ...]) -> Self:
        return cls(LockStatus(_enum(LockStatus, values[0])), _flag(values[1], "door_open"))


@dataclass(frozen=True)
class EstopState(_MessageBase):
    """Hardware e-stop circuit; sent on every change and periodically."""

    active: bool

    TYPE: ClassVar[MessageType] = MessageType.ESTOP_STATE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<B")

    @classmethod
    def from_wire(cls, values: tuple[int, ...]) -> Self:
        return cls(_flag(values[0], "active"))


@dataclass(frozen=True)
class FirmwareVersion(_MessageBase):
    """Sent at boot, on (re)connect and on REQUEST, so the host can refuse a firmware whose
    protocol it does not speak and log which build it drives."""

    protocol: int
    major: int
    minor: int
    patch: int
    build: int  # e.g. the first 8 hex digits of the firmware's git commit

    TYPE: ClassVar[MessageType] = MessageType.FIRMWARE_VERSION
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBBBI")


@dataclass(frozen=True)
class Ack(_MessageBase):
    """The command with this TYPE and SEQ was carried out (or was a duplicate of one that was)."""

    message_type: int
    seq: int

    TYPE: ClassVar[MessageType] = MessageType.ACK
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BH")


@dataclass(frozen=True)
class Nak(_MessageBase):
    """The command with this TYPE and SEQ was received but refused; retrying will not help."""

    message_type: int
    seq: int
    reason: NakReason

    TYPE: ClassVar[MessageType] = MessageType.NAK
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BHB")

    @classmethod
    def from_wire(cls, values: tuple[int, ...]) -> Self:
        message_type, seq, reason = values
        return cls(message_type, seq, NakReason(_enum(NakReason, reason)))


Message: TypeAlias = (
    WheelVelocityCommand
    | MotorEnable
    | LockCommand
    | Request
    | Heartbeat
    | EncoderReport
    | BatteryReport
    | LockState
    | EstopState
    | FirmwareVersion
    | Ack
    | Nak
)

MESSAGE_CLASSES: Final[dict[int, type[Message]]] = {
    cls.TYPE: cls
    for cls in (
        WheelVelocityCommand,
        MotorEnable,
        LockCommand,
        Request,
        Heartbeat,
        EncoderReport,
        BatteryReport,
        LockState,
        EstopState,
        FirmwareVersion,
        Ack,
        Nak,
    )
}
# Each known TYPE has exactly one payload length, which lets the parser reject a corrupted
# header at once instead of waiting for a bogus length's worth of bytes.
PAYLOAD_SIZES: Final[dict[int, int]] = {
    code: cls.LAYOUT.size for code, cls in MESSAGE_CLASSES.items()
}
assert max(PAYLOAD_SIZES.values()) <= MAX_PAYLOAD


@dataclass(frozen=True)
class Frame:
    """A decoded frame: the sender's sequence number and the message it carried."""

    seq: int
    message: Message

    def encode(self) -> bytes:
        return encode_frame(self.message, self.seq)


def encode_frame(message: Message, seq: int) -> bytes:
    """Frame one message; raises ValueError if a field does not fit its wire format."""
    if not 0 <= seq < SEQ_MODULO:
        raise ValueError(f"seq must be in [0, {SEQ_MODULO}), got {seq}")
    payload = message.encode_payload()
    body = _BODY_HEADER.pack(len(payload), PROTOCOL_VERSION, message.TYPE, seq) + payload
    return _START + body + _CRC.pack(binascii.crc_hqx(body, 0xFFFF))


def decode_message(type_code: int, payload: bytes) -> Message:
    """Decode one payload of a known TYPE; raises DecodeError (or KeyError for unknown TYPE)."""
    cls = MESSAGE_CLASSES[type_code]
    if len(payload) != cls.LAYOUT.size:
        raise DecodeError(f"{cls.__name__} payload must be {cls.LAYOUT.size} bytes")
    return cls.decode_payload(payload)


class SequenceCounter:
    """Per-sender SEQ source. The host starts at a random value so that after a host restart
    its first lock command is not mistaken by the MCU for a retry of an old one."""

    def __init__(self, start: int | None = None, rng: Random | None = None) -> None:
        if start is None:
            start = (rng or Random()).randrange(SEQ_MODULO)
        self._next = start % SEQ_MODULO

    def next(self) -> int:
        seq = self._next
        self._next = (seq + 1) % SEQ_MODULO
        return seq


@dataclass
class ParserStats:
    """Link-quality counters for diagnostics.

    Invariant: bytes_received == frame_bytes + dropped_bytes + FrameParser.pending.
    """

    bytes_received: int = 0
    frame_bytes: int = 0  # bytes of CRC-valid frames (decoded or skipped)
    dropped_bytes: int = 0  # bytes that were not part of any CRC-valid frame
    frames: int = 0  # frames decoded and returned
    crc_errors: int = 0  # candidate frames with a plausible header whose CRC failed
    header_errors: int = 0  # start bytes followed by an impossible length for their TYPE
    truncated_frames: int = 0  # incomplete candidates overtaken by a valid frame inside them
    resyncs: int = 0  # valid frames found after discarding bytes (sync regained)
    unknown_frames: int = 0  # CRC-valid frames of a TYPE this side does not know (skipped)
    version_errors: int = 0  # CRC-valid frames of another protocol version (skipped)
    malformed_frames: int = 0  # CRC-valid frames whose payload breaks the spec (skipped)
    lost_frames: int = 0  # gaps in the peer's SEQ numbers: frames the link lost entirely
    repeated_frames: int = 0  # the same SEQ twice in a row: retries of acked commands


# A SEQ jump larger than this is a peer restart, not lost frames.
_MAX_SEQ_GAP: Final = 1024


class FrameParser:
    """Streaming decoder: feed it whatever the port returned, get whole frames back.

    Resynchronisation: a candidate frame is rejected by its header (LEN too big or wrong for
    TYPE), its CRC, or a complete CRC-valid frame starting inside it while it is still
    incomplete; then only the bytes before the next start byte are discarded. Bytes are consumed
    wholesale only by a CRC-valid frame, so a damaged frame never swallows or delays the intact
    frame behind it: the first intact frame after any damage is decoded as soon as its last byte
    arrives (unless damage forges a CRC match, p ~ 2**-16 per damaged candidate).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._last_seq: int | None = None
        self._out_of_sync = False
        self.stats = ParserStats()

    @property
    def pending(self) -> int:
        """Bytes held back as the start of a frame still arriving (< MAX_FRAME_SIZE)."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget partial input and the peer's SEQ, e.g. after the port was reopened."""
        self.stats.dropped_bytes += len(self._buffer)
        self._buffer.clear()
        self._last_seq = None
        self._out_of_sync = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Decode every complete frame in the stream so far. Never raises on any input."""
        self.stats.bytes_received += len(data)
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        pos = 0
        end_of_data = len(buffer)
        while True:
            start = buffer.find(START_BYTE, pos)
            if start < 0:
                self._discard(end_of_data - pos)
                pos = end_of_data
                break
            self._discard(start - pos)
            pos = start
            if end_of_data - pos < HEADER_SIZE:
                break
            length, version, type_code, seq = _HEADER.unpack_from(buffer, pos)[1:]
            if not _header_plausible(length, version, type_code):
                self.stats.header_errors += 1
                self._discard(1)
                pos += 1
                continue
            frame_end = pos + HEADER_SIZE + length + CRC_SIZE
            if frame_end > end_of_data:
                later = _complete_frame_within(buffer, pos + 1, end_of_data)
                if later is None:
                    break  # wait for the rest of the candidate
                # Frames never overlap on the wire: a proven frame inside this unproven one
                # means this one lost bytes. Without this, a truncated frame would hold the
                # next good frame hostage until enough later bytes arrived to fail its CRC.
                self.stats.truncated_frames += 1
                self._discard(later - pos)
                pos = later
                continue
            (crc,) = _CRC.unpack_from(buffer, frame_end - CRC_SIZE)
            if crc16_ccitt_false(buffer[pos + 1 : frame_end - CRC_SIZE]) != crc:
                self.stats.crc_errors += 1
                self._discard(1)
                pos += 1
                continue
            payload = bytes(buffer[pos + HEADER_SIZE : frame_end - CRC_SIZE])
            pos = frame_end
            frame = self._accept(version, type_code, seq, payload, HEADER_SIZE + length + CRC_SIZE)
            if frame is not None:
                frames.append(frame)
        del buffer[:pos]
        return frames

    def _discard(self, count: int) -> None:
        if count > 0:
            self.stats.dropped_bytes += count
            self._out_of_sync = True

    def _accept(
        self, version: int, type_code: int, seq: int, payload: bytes, size: int
    ) -> Frame | None:
        stats = self.stats
        stats.frame_bytes += size
        if self._out_of_sync:
            stats.resyncs += 1
            self._out_of_sync = False
        if version != PROTOCOL_VERSION:
            stats.version_errors += 1
            return None
        self._track_seq(seq)
        if type_code not in MESSAGE_CLASSES:
            stats.unknown_frames += 1
            return None
        try:
            message = decode_message(type_code, payload)
        except DecodeError:
            stats.malformed_frames += 1
            return None
        stats.frames += 1
        return Frame(seq, message)

    def _track_seq(self, seq: int) -> None:
        if self._last_seq is not None:
            gap = (seq - self._last_seq) % SEQ_MODULO
            if gap == 0:
                self.stats.repeated_frames += 1
            elif gap <= _MAX_SEQ_GAP:
                self.stats.lost_frames += gap - 1
        self._last_seq = seq


def _complete_frame_within(buffer: bytearray, start: int, end: int) -> int | None:
    """Offset of the first complete CRC-valid frame starting in buffer[start:end], if any."""
    candidate = buffer.find(START_BYTE, start, end)
    while candidate >= 0 and end - candidate >= HEADER_SIZE:
        length, version, type_code = buffer[candidate + 1 : candidate + 4]
        frame_end = candidate + HEADER_SIZE + length + CRC_SIZE
        if _header_plausible(length, version, type_code) and frame_end <= end:
            (crc,) = _CRC.unpack_from(buffer, frame_end - CRC_SIZE)
            if crc16_ccitt_false(buffer[candidate + 1 : frame_end - CRC_SIZE]) == crc:
                return candidate
        candidate = buffer.find(START_BYTE, candidate + 1, end)
    return None


def _header_plausible(length: int, version: int, type_code: int) -> bool:
    if length > MAX_PAYLOAD:
        return False
    if version == PROTOCOL_VERSION and type_code in PAYLOAD_SIZES:
        return length == PAYLOAD_SIZES[type_code]
    # Another version or an unknown TYPE: only the CRC can tell; skip it whole if it passes.
    return True
