"""sensor_msgs/Image and CameraInfo from numpy arrays and calibrations (no cv_bridge), and
camera images as the grey / BGR arrays perception uses (`frame_conversion` encodings)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from delivery_robot.camera_calibration import CameraCalibration
from delivery_robot.frame_conversion import frame_to_bgr, frame_to_gray
from delivery_robot.image_buffers import array_to_buffer, buffer_to_array


def _data(message: Image) -> memoryview:
    """The pixel bytes without a copy (rclpy gives uint8[] fields as array.array or bytes)."""
    return memoryview(message.data).cast("B")


def image_to_array(message: Image) -> NDArray[np.generic]:
    return buffer_to_array(message.height, message.width, message.encoding, message.step,
                           _data(message), bool(message.is_bigendian))


def image_to_gray(message: Image) -> NDArray[np.uint8]:
    """Any camera encoding as a (height, width) uint8 grey image."""
    return frame_to_gray(message.height, message.width, message.encoding, message.step,
                         _data(message), bool(message.is_bigendian))


def image_to_bgr(message: Image) -> NDArray[np.uint8]:
    """Any camera encoding as a (height, width, 3) uint8 BGR image."""
    return frame_to_bgr(message.height, message.width, message.encoding, message.step,
                        _data(message), bool(message.is_bigendian))


def array_to_image(array: NDArray[np.generic], encoding: str, header: Header) -> Image:
    height, width, step, data = array_to_buffer(array, encoding)
    return Image(header=header, height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=step, data=data)


def camera_info(calibration: CameraCalibration, header: Header) -> CameraInfo:
    return CameraInfo(header=header, height=calibration.height, width=calibration.width,
                      distortion_model=calibration.distortion_model, d=list(calibration.d),
                      k=list(calibration.k), r=list(calibration.r), p=list(calibration.p))
