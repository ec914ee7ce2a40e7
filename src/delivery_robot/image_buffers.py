"""sensor_msgs/Image buffers <-> numpy arrays, without cv_bridge (which robots may lack).

Works on the message's plain fields (height, width, encoding, step, data, is_bigendian), so it
stays ROS-free and is tested here; `delivery_robot.ros.image_messages` wraps it for messages.
Row padding (step > width * pixel size) and big-endian data are honoured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Encoding:
    dtype: np.dtype[np.generic]
    channels: int


ENCODINGS: dict[str, Encoding] = {
    "mono8": Encoding(np.dtype(np.uint8), 1),
    "8UC1": Encoding(np.dtype(np.uint8), 1),
    "bgr8": Encoding(np.dtype(np.uint8), 3),
    "rgb8": Encoding(np.dtype(np.uint8), 3),
    "8UC3": Encoding(np.dtype(np.uint8), 3),
    "bgra8": Encoding(np.dtype(np.uint8), 4),
    "rgba8": Encoding(np.dtype(np.uint8), 4),
    "mono16": Encoding(np.dtype(np.uint16), 1),
    "16UC1": Encoding(np.dtype(np.uint16), 1),
    "32FC1": Encoding(np.dtype(np.float32), 1),
}


class ImageFormatError(ValueError):
    """An image buffer that does not match its declared size or encoding."""


def _encoding(name: str) -> Encoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ImageFormatError(
            f"unsupported image encoding {name!r}; supported: {sorted(ENCODINGS)}") from None


def buffer_to_array(height: int, width: int, encoding: str, step: int, data: bytes | bytearray
                    | memoryview, is_bigendian: bool = False) -> NDArray[np.generic]:
    """An (height, width[, channels]) array viewing the buffer (copied only when the byte order
    or padding requires it)."""
    spec = _encoding(encoding)
    row_bytes = width * spec.channels * spec.dtype.itemsize
    if step < row_bytes:
        raise ImageFormatError(f"step {step} < width * pixel size {row_bytes} for {encoding}")
    if len(data) < step * height:
        raise ImageFormatError(f"image data has {len(data)} bytes, needs {step * height} "
                               f"({height} rows of step {step})")
    dtype = spec.dtype.newbyteorder(">" if is_bigendian else "<")
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)
    pixels = rows[:, :row_bytes].copy() if step != row_bytes else rows
    array = pixels.view(dtype).reshape(height, width, spec.channels)
    if is_bigendian and spec.dtype.itemsize > 1:
        array = array.astype(spec.dtype)
    return array[:, :, 0] if spec.channels == 1 else array


def array_to_buffer(array: NDArray[np.generic], encoding: str) -> tuple[int, int, int, bytes]:
    """(height, width, step, data) of a little-endian, unpadded buffer for `array`."""
    spec = _encoding(encoding)
    expected = (2,) if spec.channels == 1 else (3,)
    if array.ndim not in expected or (spec.channels > 1 and array.shape[2] != spec.channels):
        raise ImageFormatError(f"array of shape {array.shape} does not fit {encoding} "
                               f"({spec.channels} channel(s))")
    if array.dtype != spec.dtype:
        raise ImageFormatError(f"array dtype {array.dtype} does not fit {encoding} "
                               f"({spec.dtype})")
    contiguous = np.ascontiguousarray(array, dtype=spec.dtype.newbyteorder("<"))
    height, width = contiguous.shape[:2]
    step = width * spec.channels * spec.dtype.itemsize
    return height, width, step, contiguous.tobytes()
