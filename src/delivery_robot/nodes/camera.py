"""camera: OpenCV VideoCapture -> camera/image_raw + camera/camera_info.

The source is a device index ("0"), a file or a URL. Frames are read by a thread of their own
(VideoCapture.read blocks), never in an executor callback; if the source fails or is missing,
the thread keeps trying to reopen it every `reconnect_period_s`. Images are resized to
`width` x `height` to keep rclpy fast, and the calibration is scaled to match.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from delivery_robot.camera_calibration import load_calibration
from delivery_robot.ros.image_messages import array_to_image, camera_info
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.paths import share_file
from delivery_robot.ros.qos import SENSOR_QOS


class CameraNode(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("camera", **node_options)
        self.source = declare(self, "source", "0", "Device index, video file or stream URL")
        self.frame_id = declare(self, "frame_id", "camera_optical_frame", "Optical frame")
        self.rate_hz = declare(self, "rate_hz", 10.0, "Publishing rate in Hz (at most)")
        self.width = declare(self, "width", 320, "Published image width in pixels")
        self.height = declare(self, "height", 240, "Published image height in pixels")
        self.loop_file = declare(self, "loop_file", False, "Restart a video file at its end")
        self.reconnect_s = declare(self, "reconnect_period_s", 1.0, "Wait before reopening")
        calibration_file = declare(self, "calibration_file", "",
                                   "camera_calibration YAML; empty = the installed default")
        if self.rate_hz <= 0 or self.width <= 0 or self.height <= 0 or self.reconnect_s <= 0:
            raise ValueError("rate_hz, width, height and reconnect_period_s must be > 0")
        path = Path(calibration_file) if calibration_file else share_file(
            "config/camera_calibration.yaml")
        self.calibration = load_calibration(path).scaled(self.width, self.height)
        self.image_publisher = self.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.info_publisher = self.create_publisher(CameraInfo, "camera/camera_info", SENSOR_QOS)
        self.frames_published = 0
        self.reconnects = 0
        self.open_failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture_loop, name="camera-capture",
                                        daemon=True)
        self._thread.start()

    def _open(self) -> cv2.VideoCapture | None:
        source: int | str = int(self.source) if self.source.isdigit() else self.source
        capture = cv2.VideoCapture(source)
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def _capture_loop(self) -> None:
        period = 1.0 / self.rate_hz
        capture: cv2.VideoCapture | None = None
        warned = False
        next_frame = time.monotonic()
        while not self._stop.is_set():
            if capture is None:
                capture = self._open()
                if capture is None:
                    self.open_failures += 1
                    if not warned:
                        self.get_logger().warning(f"cannot open camera source {self.source!r}; "
                                                  f"retrying every {self.reconnect_s:g} s")
                        warned = True
                    self._stop.wait(self.reconnect_s)
                    continue
                if warned:
                    self.reconnects += 1
                    self.get_logger().info(f"camera source {self.source!r} opened")
                warned = False
            ok, frame = capture.read()
            if not ok:
                if self.loop_file and capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
                    continue
                capture.release()
                capture = None
                self.get_logger().warning(f"camera source {self.source!r} stopped; reopening")
                warned = True
                self._stop.wait(self.reconnect_s)
                continue
            try:
                self._publish(frame)
            except Exception as error:  # noqa: BLE001 - rclpy's RCLError has no public type
                if not self.context.ok():
                    break  # Ctrl-C: rclpy shut the context down before destroy_node ran
                self.get_logger().error(f"cannot publish a frame: {error}",
                                        throttle_duration_sec=10.0)
            next_frame = max(next_frame + period, time.monotonic())
            self._stop.wait(max(0.0, next_frame - time.monotonic()))
        if capture is not None:
            capture.release()

    def _publish(self, frame: cv2.typing.MatLike) -> None:
        if frame.shape[1] != self.width or frame.shape[0] != self.height:
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        self.image_publisher.publish(array_to_image(frame, "bgr8", header))
        self.info_publisher.publish(camera_info(self.calibration, header))
        self.frames_published += 1

    def destroy_node(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        super().destroy_node()


def main() -> int:
    return run_node(CameraNode)


if __name__ == "__main__":
    raise SystemExit(main())
