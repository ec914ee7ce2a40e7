"""The camera node publishes images and calibration from a video source, and reconnects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from ros_harness import SpinningExecutor, wait_for

pytestmark = pytest.mark.ros


def write_video(path: Path, frames: int = 20) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for index in range(frames):
        writer.write(np.full((120, 160, 3), (index * 10 % 255, 80, 200), dtype=np.uint8))
    writer.release()


def start_camera(ros_executor: SpinningExecutor, source: Path, **overrides: Any) -> Any:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.camera import CameraNode

    values = {"source": str(source), "rate_hz": 50.0, "width": 80, "height": 60,
              "reconnect_period_s": 0.1, "frame_id": "front_camera_optical", **overrides}
    return ros_executor.add(CameraNode(
        context=ros_executor.context,
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))


def subscribe(ros_executor: SpinningExecutor) -> tuple[list[Any], list[Any]]:
    from sensor_msgs.msg import CameraInfo, Image

    from delivery_robot.ros.qos import SENSOR_QOS

    images: list[Any] = []
    infos: list[Any] = []
    listener = ros_executor.node("camera_listener")
    listener.create_subscription(Image, "camera/image_raw", images.append, SENSOR_QOS)
    listener.create_subscription(CameraInfo, "camera/camera_info", infos.append, SENSOR_QOS)
    return images, infos


def test_publishes_resized_images_with_scaled_calibration(
    ros_executor: SpinningExecutor, tmp_path: Path
) -> None:
    from delivery_robot.ros.image_messages import image_to_array

    video = tmp_path / "front.avi"
    write_video(video)
    images, infos = subscribe(ros_executor)
    start_camera(ros_executor, video, loop_file=True)
    wait_for(lambda: len(images) >= 5 and len(infos) >= 5, 15.0, "5 images and camera infos")
    image, info = images[-1], infos[-1]
    assert (image.width, image.height, image.encoding) == (80, 60, "bgr8")
    assert image.header.frame_id == info.header.frame_id == "front_camera_optical"
    pixels = image_to_array(image)
    assert pixels.shape == (60, 80, 3)
    assert abs(int(pixels[30, 40, 2]) - 200) < 12  # red channel of the drawn colour (BGR)
    assert (info.width, info.height) == (80, 60)
    assert info.k[0] == pytest.approx(525.0 * 80 / 640)


def test_missing_source_is_retried_until_it_appears(
    ros_executor: SpinningExecutor, tmp_path: Path
) -> None:
    video = tmp_path / "later.avi"
    images, _ = subscribe(ros_executor)
    camera = start_camera(ros_executor, video)
    wait_for(lambda: camera.open_failures >= 1, 10.0, "a failed attempt to open the source")
    assert camera.reconnects == 0
    assert not images
    write_video(video)
    wait_for(lambda: len(images) >= 3, 15.0, "frames once the source exists")
    assert camera.reconnects >= 1


def test_bad_parameters_are_refused(ros_executor: SpinningExecutor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        start_camera(ros_executor, tmp_path / "x.avi", rate_hz=0.0)
