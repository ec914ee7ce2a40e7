"""Serial protocol core: framing, CRC, message round trips and the streaming parser's
behaviour under corruption (example tests + hypothesis properties)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery_robot.serial_protocol import (
    CURRENT_SCALE,
    MAX_FRAME_SIZE,
    MAX_PAYLOAD,
    MESSAGE_CLASSES,
    PROTOCOL_VERSION,
    START_BYTE,
    VELOCITY_SCALE,
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
    crc16_ccitt_false,
    encode_frame,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "serial_protocol.md"

# -- strategies: values on the wire grid, so a round trip is exact ------------------------------
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
i32 = st.integers(-(1 << 31), (1 << 31) - 1)
wheel_speeds = i32.map(lambda count: count / VELOCITY_SCALE)

MESSAGE_STRATEGIES: dict[type[Message], st.SearchStrategy[Message]] = {
    WheelVelocityCommand: st.builds(WheelVelocityCommand, wheel_speeds, wheel_speeds),
    MotorEnable: st.builds(MotorEnable, st.booleans()),
    LockCommand: st.builds(LockCommand, st.sampled_from(LockAction)),
    Request: st.builds(Request, u8),
    Heartbeat: st.builds(Heartbeat, u32, u32),
    EncoderReport: st.builds(
        EncoderReport, u32, i32, i32, u16, st.booleans(), st.booleans(), st.booleans()
    ),
    BatteryReport: st.builds(
        BatteryReport,
        u16.map(lambda mv: mv / 1000),
        st.integers(-(1 << 15), (1 << 15) - 1).map(lambda count: count / CURRENT_SCALE),
        st.integers(0, 1000).map(lambda permille: permille / 1000),
        st.booleans(),
    ),
    LockState: st.builds(LockState, st.sampled_from(LockStatus), st.booleans()),
    EstopState: st.builds(EstopState, st.booleans()),
    FirmwareVersion: st.builds(FirmwareVersion, u8, u8, u8, u8, u32),
    Ack: st.builds(Ack, u8, u16),
    Nak: st.builds(Nak, u8, u16, st.sampled_from(NakReason)),
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())
frames = st.builds(Frame, u16, messages)

FAST = settings(max_examples=200, deadline=None)
# The corruption properties hold up to CRC-16 strength: a damaged frame passes the CRC with
# p ~ 2**-16 (measured 2.5e-6 per damaged frame). Random runs would then fail about once in a
# few hundred runs for a reason that is not a bug, so these replay the same examples each run.
CORRUPTION = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def raw_frame(
    type_code: int, payload: bytes, seq: int = 0, version: int = PROTOCOL_VERSION
) -> bytes:
    """A frame with any header, for what encode_frame refuses to build."""
    body = struct.pack("<BBBH", len(payload), version, type_code, seq) + payload
    return bytes([START_BYTE]) + body + struct.pack("<H", crc16_ccitt_false(body))


def crc_bitwise(data: bytes) -> int:
    """Reference CRC-16/CCITT-FALSE, one bit at a time."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def feed_all(parser: FrameParser, chunks: list[bytes]) -> list[Frame]:
    decoded: list[Frame] = []
    for chunk in chunks:
        decoded += parser.feed(chunk)
    return decoded


# -- CRC and the documented example -------------------------------------------------------------
def test_crc_is_ccitt_false_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1


@FAST
@given(st.binary(max_size=64))
def test_table_crc_matches_bitwise_reference(data: bytes) -> None:
    assert crc16_ccitt_false(data) == crc_bitwise(data)


def test_worked_example_in_the_docs_is_what_the_encoder_sends() -> None:
    frame = encode_frame(WheelVelocityCommand(left=1.5, right=-0.25), seq=7)
    assert frame.hex(" ").upper() == "A5 08 01 01 07 00 DC 05 00 00 06 FF FF FF 90 4F"
    assert frame.hex(" ").upper() in DOC.read_text()


def test_every_message_type_is_covered_by_a_strategy() -> None:
    assert set(MESSAGE_STRATEGIES) == set(MESSAGE_CLASSES.values())
    assert {cls.TYPE for cls in MESSAGE_STRATEGIES} == set(MessageType)


# -- round trips --------------------------------------------------------------------------------
@FAST
@given(frames)
def test_round_trip_of_every_message_type(frame: Frame) -> None:
    encoded = frame.encode()
    assert len(encoded) <= MAX_FRAME_SIZE
    parser = FrameParser()
    assert parser.feed(encoded) == [frame]
    assert parser.stats.frames == 1
    assert parser.stats.dropped_bytes == parser.stats.crc_errors == parser.pending == 0


@FAST
@given(st.lists(frames, max_size=20), st.lists(st.integers(min_value=0), max_size=30))
def test_stream_decodes_the_same_however_it_is_chunked(sent: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(frame.encode() for frame in sent)
    parser = FrameParser()
    assert feed_all(parser, split(stream, cuts)) == sent
    assert parser.stats.dropped_bytes == 0
    assert parser.stats.frame_bytes == len(stream)


@FAST
@given(st.floats(-1000.0, 1000.0), st.floats(-1000.0, 1000.0))
def test_velocities_are_rounded_to_the_nearest_wire_step(left: float, right: float) -> None:
    (frame,) = FrameParser().feed(encode_frame(WheelVelocityCommand(left, right), 0))
    assert isinstance(frame.message, WheelVelocityCommand)
    assert abs(frame.message.left - left) <= 0.5 / VELOCITY_SCALE + 1e-12
    assert abs(frame.message.right - right) <= 0.5 / VELOCITY_SCALE + 1e-12


@pytest.mark.parametrize(
    ("message", "seq"),
    [
        (WheelVelocityCommand(float("nan"), 0.0), 0),
        (WheelVelocityCommand(3e6, 0.0), 0),
        (BatteryReport(24.0, -1.0, 1.2, False), 0),
        (BatteryReport(-1.0, -1.0, 0.5, False), 0),
        (Request(256), 0),
        (Heartbeat(-1, 0), 0),
        (MotorEnable(True), 1 << 16),
    ],
)
def test_values_that_do_not_fit_the_wire_are_refused(message: Message, seq: int) -> None:
    with pytest.raises(ValueError, match="."):
        encode_frame(message, seq)


# -- the parser on damaged and foreign input ---------------------------------------------------
def test_unknown_type_other_version_and_malformed_frames_are_skipped_whole() -> None:
    good = Frame(9, EstopState(True))
    stream = (
        raw_frame(0x3E, b"\x01\x02\x03")  # a TYPE from a newer host
        + raw_frame(MessageType.ESTOP_STATE, b"\x01\x00", version=2)  # another protocol
        + raw_frame(MessageType.LOCK_STATE, bytes([7, 0]))  # lock status 7 does not exist
        + raw_frame(MessageType.ESTOP_STATE, b"\x02")  # a bool that is neither 0 nor 1
        + good.encode()
    )
    parser = FrameParser()
    assert parser.feed(stream) == [good]
    stats = parser.stats
    assert (stats.unknown_frames, stats.version_errors, stats.malformed_frames) == (1, 1, 2)
    assert stats.dropped_bytes == stats.crc_errors == stats.header_errors == 0


def test_wrong_length_for_type_is_rejected_without_waiting_for_it() -> None:
    parser = FrameParser()
    # A LOCK_COMMAND header claiming 40 payload bytes: rejected from the header alone.
    assert parser.feed(bytes([START_BYTE, 40, PROTOCOL_VERSION, MessageType.LOCK_COMMAND])) == []
    assert parser.feed(b"\x00\x00") == []
    assert parser.stats.header_errors == 1
    assert parser.pending == 0
    assert parser.feed(bytes([START_BYTE, MAX_PAYLOAD + 1, 1, 0x3E, 0, 0])) == []
    assert parser.stats.header_errors == 2


def test_garbage_and_a_dropped_byte_cost_exactly_the_damaged_frame() -> None:
    a, b, c = Frame(1, Heartbeat(5, 6)), Frame(2, MotorEnable(True)), Frame(3, EstopState(False))
    damaged_b = b.encode()[:4] + b.encode()[5:]  # one byte lost inside b
    stream = b"\xa5\xa5\x00garbage" + a.encode() + damaged_b + c.encode()
    parser = FrameParser()
    assert parser.feed(stream) == [a, c]
    assert parser.stats.resyncs == 2
    assert parser.stats.crc_errors + parser.stats.header_errors >= 1


@pytest.mark.parametrize(
    "kept",
    [2, 6, 10],  # cut after LEN (next byte read as VER), after the header, inside the payload
)
def test_a_truncated_frame_does_not_hold_the_next_one_back(kept: int) -> None:
    """The last frame before the line goes quiet (often an ACK) must not wait for more traffic
    just because the frame before it lost its tail."""
    victim = Frame(1, EncoderReport(1, 2, 3, 4, True, False, False))  # 23 bytes
    last = Frame(2, Ack(MessageType.LOCK_COMMAND, 9))  # 11 bytes: fewer than the victim lacks
    parser = FrameParser()
    assert parser.feed(victim.encode()[:kept] + last.encode()) == [last]
    assert parser.pending == 0
    assert parser.stats.truncated_frames == 1


def test_sequence_gaps_and_repeats_are_counted() -> None:
    parser = FrameParser()
    stream = b"".join(Frame(seq, EstopState(False)).encode() for seq in (65534, 65535, 2, 2, 3))
    assert len(parser.feed(stream)) == 5
    assert parser.stats.lost_frames == 2  # 0 and 1 never arrived (across the wrap)
    assert parser.stats.repeated_frames == 1


def test_sequence_counter_wraps() -> None:
    counter = SequenceCounter(0xFFFF)
    assert [counter.next() for _ in range(3)] == [0xFFFF, 0, 1]
    assert 0 <= SequenceCounter().next() < 1 << 16


@FAST
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_never_raise_and_every_byte_is_accounted_for(
    data: bytes, cuts: list[int]
) -> None:
    parser = FrameParser()
    for chunk in split(data, cuts):
        parser.feed(chunk)
        assert parser.pending < MAX_FRAME_SIZE
    stats = parser.stats
    assert stats.bytes_received == len(data)
    assert stats.frame_bytes + stats.dropped_bytes + parser.pending == len(data)


@FAST
@given(st.lists(st.sampled_from([START_BYTE, PROTOCOL_VERSION, 0, 1, 2, 8, 0x81, 0xFF])))
def test_start_byte_heavy_noise_never_raises(noise: list[int]) -> None:
    """Noise made of header-like bytes exercises the rejection paths more than random bytes."""
    parser = FrameParser()
    parser.feed(bytes(noise))
    stats = parser.stats
    assert stats.frame_bytes + stats.dropped_bytes + parser.pending == len(noise)


@st.composite
def damaged_streams(draw: st.DrawFn) -> tuple[list[Frame], bytes]:
    """Frames with unique SEQs, then bit flips, dropped bytes and garbage anywhere."""
    sent = [Frame(seq, m) for seq, m in enumerate(draw(st.lists(messages, max_size=12)))]
    stream = bytearray(b"".join(frame.encode() for frame in sent))
    damage = st.tuples(
        st.sampled_from(["flip", "drop", "insert"]),
        st.integers(min_value=0),
        st.integers(0, 7),
        st.binary(min_size=1, max_size=12),
    )
    for kind, where, bit, garbage in draw(st.lists(damage, min_size=1, max_size=8)):
        if kind == "insert":
            position = where % (len(stream) + 1)
            stream[position:position] = garbage
        elif stream and kind == "flip":
            stream[where % len(stream)] ^= 1 << bit
        elif stream:
            del stream[where % len(stream)]
    return sent, bytes(stream)


@CORRUPTION
@given(damaged_streams(), st.lists(st.integers(min_value=0), max_size=10))
def test_corruption_never_yields_a_frame_that_was_not_sent(
    case: tuple[list[Frame], bytes], cuts: list[int]
) -> None:
    sent, stream = case
    parser = FrameParser()
    for frame in feed_all(parser, split(stream, cuts)):
        assert frame in sent


@st.composite
def one_damaged_frame_and_garbage_between(
    draw: st.DrawFn,
) -> tuple[list[Frame], int, bytes]:
    drawn = draw(st.lists(messages, min_size=2, max_size=10))
    sent = [Frame(seq, message) for seq, message in enumerate(drawn)]
    victim = draw(st.integers(0, len(sent) - 1))
    parts: list[bytes] = []
    for index, frame in enumerate(sent):
        parts.append(draw(st.binary(max_size=10)))
        encoded = bytearray(frame.encode())
        if index == victim:
            where = draw(st.integers(0, len(encoded) - 1))
            kind = draw(st.sampled_from(["flip", "drop", "truncate"]))
            if kind == "flip":
                encoded[where] ^= 1 << draw(st.integers(0, 7))
            elif kind == "drop":
                del encoded[where]
            else:
                del encoded[where:]
        parts.append(bytes(encoded))
    return sent, victim, b"".join(parts)


@CORRUPTION
@given(one_damaged_frame_and_garbage_between(), st.lists(st.integers(min_value=0), max_size=10))
def test_parser_resynchronises_within_one_frame(
    case: tuple[list[Frame], int, bytes], cuts: list[int]
) -> None:
    sent, victim, stream = case
    decoded = feed_all(FrameParser(), split(stream, cuts))
    assert decoded == sent[:victim] + sent[victim + 1 :]


def test_protocol_core_does_not_import_ros() -> None:
    code = (
        "import sys, delivery_robot.serial_protocol; "
        "sys.exit('rclpy' in sys.modules or 'serial' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
