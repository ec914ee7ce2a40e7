from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from delivery_robot.camera_calibration import CalibrationError, load_calibration
from delivery_robot.image_buffers import (
    ENCODINGS,
    ImageFormatError,
    array_to_buffer,
    buffer_to_array,
)

CONFIG = Path(__file__).resolve().parents[1] / "config"


def sample(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    spec = ENCODINGS[encoding]
    shape = (height, width) if spec.channels == 1 else (height, width, spec.channels)
    values = np.arange(np.prod(shape)).reshape(shape) * 37 % 251
    return values.astype(spec.dtype) + (spec.dtype.type(0.25) if spec.dtype.kind == "f" else 0)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip(encoding: str) -> None:
    array = sample(encoding)
    height, width, step, data = array_to_buffer(array, encoding)
    assert (height, width) == array.shape[:2]
    assert step * height == len(data)
    np.testing.assert_array_equal(buffer_to_array(height, width, encoding, step, data), array)


def test_padded_rows_are_skipped() -> None:
    array = sample("bgr8", 4, 3)
    _, _, step, data = array_to_buffer(array, "bgr8")
    padded = b"".join(data[r * step:(r + 1) * step] + b"\xff" * 7 for r in range(4))
    np.testing.assert_array_equal(buffer_to_array(4, 3, "bgr8", step + 7, padded), array)


def test_big_endian_16_bit_is_read_correctly() -> None:
    array = np.array([[1, 258], [65535, 4096]], dtype=np.uint16)
    data = array.astype(">u2").tobytes()
    decoded = buffer_to_array(2, 2, "mono16", 4, data, is_bigendian=True)
    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype == np.uint16


@pytest.mark.parametrize(("call", "message"), [
    (lambda: buffer_to_array(2, 2, "yuv422", 4, b"\0" * 8), "unsupported image encoding"),
    (lambda: buffer_to_array(2, 2, "mono8", 1, b"\0" * 4), "step 1 < width"),
    (lambda: buffer_to_array(2, 2, "mono8", 2, b"\0" * 3), "needs 4"),
    (lambda: array_to_buffer(np.zeros((2, 2), np.uint8), "bgr8"), "does not fit bgr8"),
    (lambda: array_to_buffer(np.zeros((2, 2), np.float64), "32FC1"), "dtype float64"),
])
def test_bad_buffers_get_clear_errors(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageFormatError, match=message):
        call()


def test_default_calibration_loads_and_scales() -> None:
    calibration = load_calibration(CONFIG / "camera_calibration.yaml")
    assert (calibration.width, calibration.height) == (640, 480)
    half = calibration.scaled(320, 240)
    assert half.k[0] == pytest.approx(262.5)
    assert half.k[2] == pytest.approx(159.75)
    assert half.p[6] == pytest.approx(119.75)
    assert half.k[8] == 1.0


def test_broken_calibration_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "cam.yaml"
    path.write_text("image_width: 640\nimage_height: 480\ncamera_matrix: {data: [1, 2]}\n")
    with pytest.raises(CalibrationError, match="camera_matrix has 2 values"):
        load_calibration(path)
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibration(tmp_path / "missing.yaml")


# ---- camera encodings -> grey / BGR for perception (frame_conversion, image_messages) ------------

from delivery_robot.frame_conversion import (  # noqa: E402
    SUPPORTED,
    frame_to_bgr,
    frame_to_gray,
    is_colour,
)


def colour_card(height: int = 8, width: int = 12) -> np.ndarray:
    """A BGR test card: 2x2-pixel blocks of distinct colours (flat for demosaicing)."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(30, 226, (height // 2, width // 2, 3)).astype(np.uint8)
    return np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)


def bt601_yuv(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b, g, r = (bgr[..., i].astype(float) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = 128 + 0.564 * (b - y)
    v = 128 + 0.713 * (r - y)
    return y, u, v


def video_range_yuv(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 with the video range (Y 16..235) that V4L2 cameras send."""
    b, g, r = (bgr[..., i].astype(float) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return y, u, v


def pack_yuv422(bgr: np.ndarray, order: str) -> bytes:
    """Packed 4:2:2 as cameras send it: 'uyvy' (ROS yuv422) or 'yuyv' (yuv422_yuy2)."""
    y, u, v = video_range_yuv(bgr)
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    height, width = y.shape
    out = np.zeros((height, width * 2), np.uint8)
    quad = {"uyvy": (u2, y[:, 0::2], v2, y[:, 1::2]), "yuyv": (y[:, 0::2], u2, y[:, 1::2], v2)}
    for k, plane in enumerate(quad[order]):
        out[:, k::4] = np.clip(np.round(plane), 0, 255)
    return out.tobytes()


def mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """A Bayer raw frame of `bgr`, pattern named by its top-left 2x2 cell (e.g. 'rggb')."""
    channel = {"b": 0, "g": 1, "r": 2}
    raw = np.zeros(bgr.shape[:2], np.uint8)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        raw[dy::2, dx::2] = bgr[dy::2, dx::2, channel[colour]]
    return raw


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8", "8UC3"])
def test_colour_encodings_to_grey_and_bgr(encoding: str) -> None:
    bgr = colour_card()
    array = {"bgr8": bgr, "8UC3": bgr, "rgb8": bgr[..., ::-1],
             "bgra8": np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]),
             "rgba8": np.dstack([bgr[..., ::-1], np.full(bgr.shape[:2], 7, np.uint8)])}[encoding]
    height, width, step, data = array_to_buffer(np.ascontiguousarray(array), encoding)
    np.testing.assert_array_equal(frame_to_bgr(height, width, encoding, step, data), bgr)
    grey = frame_to_gray(height, width, encoding, step, data)
    np.testing.assert_allclose(grey, bt601_yuv(bgr)[0], atol=1.0)
    assert is_colour(encoding)


def test_mono_encodings_and_sensors_with_fewer_than_16_bits() -> None:
    mono = (np.arange(96, dtype=np.uint8).reshape(8, 12) * 2)
    _, _, step, data = array_to_buffer(mono, "mono8")
    np.testing.assert_array_equal(frame_to_gray(8, 12, "mono8", step, data), mono)
    assert frame_to_bgr(8, 12, "mono8", step, data).shape == (8, 12, 3)
    assert not is_colour("mono8")
    assert not is_colour("mono16")
    twelve_bit = mono.astype(np.uint16) * 16  # a 12-bit sensor in a 16-bit container
    _, _, step, data = array_to_buffer(twelve_bit, "mono16")
    np.testing.assert_array_equal(frame_to_gray(8, 12, "mono16", step, data), mono)
    big_endian = twelve_bit.astype(">u2").tobytes()
    np.testing.assert_array_equal(frame_to_gray(8, 12, "mono16", 24, big_endian, True), mono)


@pytest.mark.parametrize(("encoding", "order"), [("yuv422", "uyvy"), ("uyvy", "uyvy"),
                                                 ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")])
def test_packed_yuv422_from_usb_cameras(encoding: str, order: str) -> None:
    bgr = colour_card()
    data = pack_yuv422(bgr, order)
    padded = b"".join(data[r * 24:(r + 1) * 24] + b"\0" * 8 for r in range(8))  # step 32
    grey = frame_to_gray(8, 12, encoding, 32, padded)  # the luma plane as sent
    np.testing.assert_allclose(grey, video_range_yuv(bgr)[0], atol=1.0)
    np.testing.assert_allclose(frame_to_bgr(8, 12, encoding, 32, padded).astype(float),
                               bgr.astype(float), atol=6.0)
    with pytest.raises(ImageFormatError, match="even width"):
        frame_to_gray(8, 11, encoding, 22, data)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_mosaics_are_named_by_their_top_left_cell(pattern: str) -> None:
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[:] = (40, 120, 200)  # one flat colour: demosaicing must give it back exactly
    raw = mosaic(bgr, pattern)
    encoding = f"bayer_{pattern}8"
    out = frame_to_bgr(16, 16, encoding, 16, raw.tobytes())
    np.testing.assert_allclose(out[2:-2, 2:-2].astype(float), bgr[2:-2, 2:-2].astype(float),
                               atol=2.0)
    grey = frame_to_gray(16, 16, encoding, 16, raw.tobytes())
    assert abs(float(grey[4:-4, 4:-4].mean()) - bt601_yuv(bgr)[0].mean()) < 3.0


def test_depth_images_and_unknown_encodings_are_refused_clearly() -> None:
    with pytest.raises(ImageFormatError, match="not a camera picture"):
        frame_to_gray(2, 2, "32FC1", 8, b"\0" * 16)
    with pytest.raises(ImageFormatError, match="unsupported image encoding 'nv12'"):
        frame_to_bgr(2, 2, "nv12", 2, b"\0" * 6)
    with pytest.raises(ImageFormatError, match="needs 64"):
        frame_to_gray(4, 8, "yuv422", 16, b"\0" * 20)
    assert "yuv422" in SUPPORTED
    assert "bayer_rggb8" in SUPPORTED
    assert "32FC1" not in SUPPORTED


def test_image_messages_convert_without_copying_the_pixels() -> None:
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from delivery_robot.ros.image_messages import (
        array_to_image,
        image_to_array,
        image_to_bgr,
        image_to_gray,
    )

    bgr = colour_card()
    message = array_to_image(np.ascontiguousarray(bgr[..., ::-1]), "rgb8", Header())
    np.testing.assert_array_equal(image_to_bgr(message), bgr)
    assert image_to_gray(message).shape == (8, 12)
    view = image_to_array(message)
    assert np.shares_memory(view, np.frombuffer(message.data, np.uint8))
    raw = Image(height=8, width=12, encoding="yuv422", step=24, data=pack_yuv422(bgr, "uyvy"))
    np.testing.assert_allclose(image_to_gray(raw), video_range_yuv(bgr)[0], atol=1.0)
