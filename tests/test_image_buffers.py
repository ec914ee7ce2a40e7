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
