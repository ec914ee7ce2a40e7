"""Camera frames of any encoding cameras send -> the grey or BGR uint8 arrays perception uses.

`image_buffers` turns a sensor_msgs/Image buffer into an array for the encodings it knows; this
adds what camera drivers publish besides rgb8 / bgr8 / mono8: packed YUV 4:2:2 (usb_cam,
v4l2_camera: `yuv422` = UYVY, `yuv422_yuy2` = YUYV, and their aliases `uyvy`, `yuyv`), raw Bayer
mosaics of industrial cameras (`bayer_rggb8`, `bayer_bggr8`, `bayer_gbrg8`, `bayer_grbg8`), 16-bit
mono of 10/12-bit sensors, and alpha channels. Depth images (32FC1, 16UC1 from a depth camera)
are not camera pictures: asking for grey or BGR from 32FC1 is refused with a clear error.
Grey from YUV is the luma plane as sent (video range 16..235 for V4L2 cameras): perception only
needs contrast, so it is not stretched.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from delivery_robot.image_buffers import ENCODINGS, ImageFormatError, buffer_to_array

Gray = npt.NDArray[np.uint8]
Bgr = npt.NDArray[np.uint8]
Buffer = bytes | bytearray | memoryview

# Packed 4:2:2, two bytes per pixel: encoding -> (OpenCV conversion to BGR, offset of Y).
YUV422: dict[str, tuple[int, int]] = {
    "yuv422": (cv2.COLOR_YUV2BGR_UYVY, 1),
    "uyvy": (cv2.COLOR_YUV2BGR_UYVY, 1),
    "yuv422_yuy2": (cv2.COLOR_YUV2BGR_YUYV, 0),
    "yuyv": (cv2.COLOR_YUV2BGR_YUYV, 0),
}
# Bayer mosaics named by their top-left 2x2 cell, as in sensor_msgs/image_encodings.
BAYER: dict[str, tuple[int, int]] = {
    "bayer_rggb8": (cv2.COLOR_BayerRGGB2BGR, cv2.COLOR_BayerRGGB2GRAY),
    "bayer_bggr8": (cv2.COLOR_BayerBGGR2BGR, cv2.COLOR_BayerBGGR2GRAY),
    "bayer_gbrg8": (cv2.COLOR_BayerGBRG2BGR, cv2.COLOR_BayerGBRG2GRAY),
    "bayer_grbg8": (cv2.COLOR_BayerGRBG2BGR, cv2.COLOR_BayerGRBG2GRAY),
}
COLOUR_TO_GRAY = {"bgr8": cv2.COLOR_BGR2GRAY, "8UC3": cv2.COLOR_BGR2GRAY,
                  "rgb8": cv2.COLOR_RGB2GRAY, "bgra8": cv2.COLOR_BGRA2GRAY,
                  "rgba8": cv2.COLOR_RGBA2GRAY}
COLOUR_TO_BGR = {"rgb8": cv2.COLOR_RGB2BGR, "bgra8": cv2.COLOR_BGRA2BGR,
                 "rgba8": cv2.COLOR_RGBA2BGR}
GREY_ENCODINGS = frozenset({"mono8", "8UC1", "mono16", "16UC1"})
NOT_PICTURES = frozenset({"32FC1"})

SUPPORTED = sorted((set(ENCODINGS) - NOT_PICTURES) | set(YUV422) | set(BAYER))


def _rows(height: int, width: int, encoding: str, step: int, data: Buffer,
          bytes_per_pixel: int) -> npt.NDArray[np.uint8]:
    """(height, width * bytes_per_pixel) view of a byte-per-sample buffer, padding dropped."""
    row = width * bytes_per_pixel
    if step < row:
        raise ImageFormatError(f"step {step} < width * pixel size {row} for {encoding}")
    if len(data) < step * height:
        raise ImageFormatError(f"image data has {len(data)} bytes, needs {step * height} "
                               f"({height} rows of step {step})")
    if width % 2 and encoding in YUV422:
        raise ImageFormatError(f"{encoding} needs an even width, got {width}")
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)
    return rows[:, :row]


def _to_8bit(array: npt.NDArray[np.generic]) -> Gray:
    """16-bit grey -> 8 bit, keeping the sensor's bit depth in view (a 12-bit sensor in a
    16-bit container would otherwise look black): shift by the bits above 8 that are used."""
    values = np.asarray(array, dtype=np.uint16)
    peak = int(values.max()) if values.size else 0
    shift = max(0, peak.bit_length() - 8)
    return np.asarray(values >> shift, dtype=np.uint8)


def _check(encoding: str) -> None:
    if encoding in NOT_PICTURES:
        raise ImageFormatError(f"{encoding} is a depth or measurement image, not a camera "
                               "picture")
    if encoding not in ENCODINGS and encoding not in YUV422 and encoding not in BAYER:
        raise ImageFormatError(f"unsupported image encoding {encoding!r}; supported: "
                               f"{SUPPORTED}")


def frame_to_gray(height: int, width: int, encoding: str, step: int, data: Buffer,
                  is_bigendian: bool = False) -> Gray:
    """The frame as a (height, width) uint8 grey image (a view, when it already is one)."""
    _check(encoding)
    if encoding in YUV422:
        _, y_offset = YUV422[encoding]
        return np.ascontiguousarray(_rows(height, width, encoding, step, data, 2)[:, y_offset::2])
    if encoding in BAYER:
        mosaic = _rows(height, width, encoding, step, data, 1)
        return np.asarray(cv2.cvtColor(mosaic, BAYER[encoding][1]), dtype=np.uint8)
    array = buffer_to_array(height, width, encoding, step, data, is_bigendian)
    if encoding in ("mono8", "8UC1"):
        return np.asarray(array, dtype=np.uint8)
    if encoding in ("mono16", "16UC1"):
        return _to_8bit(array)
    return np.asarray(cv2.cvtColor(np.asarray(array, dtype=np.uint8), COLOUR_TO_GRAY[encoding]),
                      dtype=np.uint8)


def frame_to_bgr(height: int, width: int, encoding: str, step: int, data: Buffer,
                 is_bigendian: bool = False) -> Bgr:
    """The frame as a (height, width, 3) uint8 BGR image; grey frames get three equal
    channels."""
    _check(encoding)
    if encoding in YUV422:
        packed = _rows(height, width, encoding, step, data, 2).reshape(height, width, 2)
        return np.asarray(cv2.cvtColor(np.ascontiguousarray(packed), YUV422[encoding][0]),
                          dtype=np.uint8)
    if encoding in BAYER:
        mosaic = _rows(height, width, encoding, step, data, 1)
        return np.asarray(cv2.cvtColor(mosaic, BAYER[encoding][0]), dtype=np.uint8)
    if encoding in GREY_ENCODINGS:
        grey = frame_to_gray(height, width, encoding, step, data, is_bigendian)
        return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    array = np.asarray(buffer_to_array(height, width, encoding, step, data, is_bigendian),
                       dtype=np.uint8)
    if encoding in ("bgr8", "8UC3"):
        return array
    return np.asarray(cv2.cvtColor(array, COLOUR_TO_BGR[encoding]), dtype=np.uint8)


def is_colour(encoding: str) -> bool:
    """Whether frames of this encoding carry colour (the compartment check uses it)."""
    return encoding not in GREY_ENCODINGS
