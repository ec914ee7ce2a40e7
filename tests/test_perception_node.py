"""The perception node through real rclpy: synthetic camera frames in, dock/pose and
compartment/occupancy out, and a QR code shown while a recipient is awaited goes to a real
handoff/verify service (once)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from ros_harness import SpinningExecutor, wait_for

from delivery_robot import synthetic_scenes as ss
from delivery_robot.fiducial_docking import (
    PlanarPose,
    RigidTransform,
    camera_mount,
    dock_in_base,
)
from delivery_robot.handoff_credentials import make_qr_token

pytestmark = pytest.mark.ros

CAMERA = ss.DEFAULT_CAMERA
MOUNT = [0.3, 0.0, 0.45, 0.0, 0.0, 0.0]
TOKEN = make_qr_token(b"k" * 32, "order-7", 1_900_000_000, b"n" * 12)
LAYOUT = ss.CompartmentLayout()
X0, Y0, X1, Y1 = LAYOUT.floor
REGION = [(X0 + 6) / LAYOUT.width, (Y0 + 6) / LAYOUT.height, (X1 - 6) / LAYOUT.width,
          (Y1 - 6) / LAYOUT.height]
MODE_TO_DROPOFF = 3
MODE_AWAITING_RECIPIENT = 4


def dock_frame() -> tuple[np.ndarray, RigidTransform]:
    pose = ss.facing_pose(0.12, 0.05, 1.2, yaw=0.25)
    frame = ss.render_markers(CAMERA, [ss.PlacedMarker(7, 0.2, pose)],
                              ss.Photometry(noise_sigma=1.5), np.random.default_rng(1))
    return frame.image, pose


def qr_frame() -> np.ndarray:
    rng = np.random.default_rng(2)
    phone = ss.PlacedPhone(TOKEN, ss.facing_pose(0.0, 0.0, 0.17, yaw=0.15, roll=0.2))
    frame = ss.render_phones(CAMERA, [phone], ss.Photometry(noise_sigma=1.5), rng)
    assert frame.codes[0].in_view
    return frame.image


class Rig:
    """Camera, compartment camera, mission executor and handoff node stand-in."""

    def __init__(self, ros_executor: SpinningExecutor, period: float = 0.1) -> None:
        from delivery_interfaces.msg import RobotState
        from delivery_interfaces.srv import VerifyHandoff
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import UInt8

        from delivery_robot.ros.qos import SENSOR_QOS, STATE_QOS

        self.node = ros_executor.node("perception_rig")
        self.front: np.ndarray | None = None
        self.compartment: np.ndarray | None = None
        self.granted = False
        self.lock = threading.Lock()
        self.poses: list[Any] = []
        self.occupancy: list[tuple[float, int]] = []
        self.requests: list[Any] = []
        self.stamps: list[Any] = []
        self.image_pub = self.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera/camera_info", SENSOR_QOS)
        self.compartment_pub = self.node.create_publisher(Image, "compartment_camera/image_raw",
                                                          SENSOR_QOS)
        self.state_pub = self.node.create_publisher(RobotState, "robot_state", STATE_QOS)
        self.node.create_subscription(PoseStamped, "dock/pose", self.poses.append,
                                      QoSProfile(depth=10))
        self.node.create_subscription(UInt8, "compartment/occupancy", self._on_occupancy,
                                      STATE_QOS)
        self.node.create_service(VerifyHandoff, "handoff/verify", self._on_verify)
        self.node.create_timer(period, self._tick)

    def _on_occupancy(self, message: Any) -> None:
        self.occupancy.append((self.node.get_clock().now().nanoseconds * 1e-9, message.data))

    def _on_verify(self, request: Any, response: Any) -> Any:
        with self.lock:
            self.requests.append(request)
            response.granted = self.granted
        response.error_code = "" if self.granted else "wrong_credential"
        response.message = "accepted" if self.granted else "wrong code"
        return response

    def set_mode(self, mode: int, orders: list[str]) -> None:
        from delivery_interfaces.msg import RobotState

        self.state_pub.publish(RobotState(robot_id="robot1", mode=mode, order_ids=orders))

    def _tick(self) -> None:
        from sensor_msgs.msg import CameraInfo
        from std_msgs.msg import Header

        from delivery_robot.ros.image_messages import array_to_image

        header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id="front_optical")
        if self.front is not None:
            self.stamps.append(header.stamp)
            self.image_pub.publish(array_to_image(self.front, "bgr8", header))
            self.info_pub.publish(CameraInfo(header=header, width=CAMERA.width,
                                             height=CAMERA.height, k=list(CAMERA.k),
                                             d=list(CAMERA.d), distortion_model="plumb_bob"))
        if self.compartment is not None:
            self.compartment_pub.publish(array_to_image(
                self.compartment, "bgr8", Header(stamp=header.stamp, frame_id="compartment")))


def start_perception(ros_executor: SpinningExecutor, tmp_path: Path, reference: bool = True,
                     **overrides: Any) -> Any:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.perception import PerceptionNode

    path = tmp_path / "empty_compartment.png"
    if reference:
        cv2.imwrite(str(path), ss.compartment_reference(LAYOUT))
    values: dict[str, Any] = {
        "camera_mount": MOUNT, "dock_marker_ids": [7], "compartment_reference_file": str(path),
        "compartment_region": REGION, "compartment_rate_hz": 20.0,
        "compartment_confirm_frames": 2, "compartment_timeout_s": 1.0,
        "occupancy_heartbeat_s": 0.4, "qr_refused_retry_s": 60.0, **overrides}
    return ros_executor.add(PerceptionNode(
        context=ros_executor.context,
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))


def test_dock_pose_is_published_in_base_link(ros_executor: SpinningExecutor,
                                             tmp_path: Path) -> None:
    rig = Rig(ros_executor)
    image, truth = dock_frame()
    rig.front = image
    node = start_perception(ros_executor, tmp_path)
    wait_for(lambda: len(rig.poses) >= 3, 20.0, "three dock poses")
    message = rig.poses[-1]
    assert message.header.frame_id == "base_link"
    assert any(message.header.stamp == stamp for stamp in rig.stamps)  # the image's time
    expected = dock_in_base(truth, camera_mount(*MOUNT))
    p = message.pose.position
    assert np.linalg.norm([p.x, p.y, p.z] - expected.translation) < 0.01
    q = message.pose.orientation
    x, y, z, w = expected.quaternion()
    assert abs(q.x * x + q.y * y + q.z * z + q.w * w) > np.cos(np.radians(1.0) / 2)
    planar = PlanarPose.from_transform(expected)
    assert planar.x > 1.4
    assert planar.yaw == pytest.approx(0.25, abs=0.01)
    assert node.docks_published >= 3
    assert node.frames_processed + node.frames_dropped <= len(rig.stamps)


@pytest.mark.slow
def test_occupancy_follows_the_compartment(ros_executor: SpinningExecutor,
                                           tmp_path: Path) -> None:
    rig = Rig(ros_executor)
    start_perception(ros_executor, tmp_path)
    wait_for(lambda: any(v == 0 for _, v in rig.occupancy), 15.0, "UNKNOWN before frames")
    rig.compartment = ss.compartment_frame(LAYOUT, 11, False, strength=0.7).image
    wait_for(lambda: rig.occupancy and rig.occupancy[-1][1] == 1, 15.0, "EMPTY")
    rig.compartment = ss.compartment_frame(LAYOUT, 12, True, strength=0.7).image
    wait_for(lambda: rig.occupancy[-1][1] == 2, 15.0, "OCCUPIED")
    # Heartbeat: the state is repeated while it holds (>= 1 Hz; configured every 0.4 s).
    since = rig.occupancy[-1][0]
    wait_for(lambda: sum(1 for t, v in rig.occupancy if t > since and v == 2) >= 2, 5.0,
             "two heartbeats of OCCUPIED")
    rig.compartment = None  # the compartment camera goes quiet
    wait_for(lambda: rig.occupancy[-1][1] == 0, 10.0, "UNKNOWN after the camera stops")


def test_qr_code_is_verified_once_while_a_recipient_is_awaited(
        ros_executor: SpinningExecutor, tmp_path: Path) -> None:
    rig = Rig(ros_executor)
    rig.front = qr_frame()
    node = start_perception(ros_executor, tmp_path)
    rig.set_mode(MODE_TO_DROPOFF, ["order-7"])
    wait_for(lambda: node.frames_processed >= 5, 20.0, "frames while driving")
    assert rig.requests == []  # not awaiting a recipient: no scanning, no calls
    rig.set_mode(MODE_AWAITING_RECIPIENT, ["order-7"])
    wait_for(lambda: len(rig.requests) >= 1, 20.0, "a handoff/verify call")
    request = rig.requests[0]
    assert request.method == 1
    assert request.order_id == "order-7"
    assert request.credential == TOKEN
    # Refused: the same token is not sent again within qr_refused_retry_s, frame after frame.
    seen = node.frames_processed
    wait_for(lambda: node.frames_processed >= seen + 8, 20.0, "more frames of the same code")
    assert len(rig.requests) == 1
    assert node.verify_calls == 1
    # A new order (another recipient) may present the code again.
    rig.set_mode(MODE_AWAITING_RECIPIENT, ["order-8"])
    wait_for(lambda: len(rig.requests) >= 2, 20.0, "a call for the next order")
    assert rig.requests[1].order_id == "order-8"


def test_reference_can_be_captured_by_service(ros_executor: SpinningExecutor,
                                              tmp_path: Path) -> None:
    from std_srvs.srv import Trigger

    rig = Rig(ros_executor)
    node = start_perception(ros_executor, tmp_path, reference=False)
    client = rig.node.create_client(Trigger, "compartment/capture_reference")
    assert client.wait_for_service(timeout_sec=10.0)
    refused = client.call_async(Trigger.Request())
    wait_for(refused.done, 10.0, "capture answer without frames")
    assert not refused.result().success
    assert "no compartment camera frame" in \
        refused.result().message
    rig.compartment = ss.compartment_reference(LAYOUT)
    wait_for(lambda: node.compartment_checks == 0 and rig.occupancy and
             rig.occupancy[-1][1] == 0 and node._last_compartment_frame is not None, 15.0,
             "frames without a reference (UNKNOWN)")
    answer = client.call_async(Trigger.Request())
    wait_for(answer.done, 10.0, "capture answer")
    assert answer.result().success
    wait_for(lambda: rig.occupancy[-1][1] == 1, 15.0, "EMPTY against the captured reference")
    wait_for(lambda: (tmp_path / "empty_compartment.png").exists(), 10.0, "reference saved")


def test_bad_configuration_is_refused(ros_executor: SpinningExecutor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="camera_mount"):
        start_perception(ros_executor, tmp_path, camera_mount=[0.1, 0.2])
    with pytest.raises(ValueError, match="compartment_rate_hz"):
        start_perception(ros_executor, tmp_path, compartment_rate_hz=0.0)
    with pytest.raises(ValueError, match="refine must be"):
        start_perception(ros_executor, tmp_path, corner_refinement="magic")
    bad = tmp_path / "not_an_image.png"
    bad.write_text("nope")
    with pytest.raises(ValueError, match="cannot read"):
        start_perception(ros_executor, tmp_path, reference=False,
                         compartment_reference_file=str(bad))


def test_latest_slot_keeps_only_the_newest_frame() -> None:
    from delivery_robot.nodes.perception import LatestSlot

    slot = LatestSlot()
    for k in range(5):
        slot.put(k)
    assert slot.take(0.0) == 4
    assert (slot.received, slot.dropped) == (5, 4)
    assert slot.take(0.01) is None


def test_the_shipped_config_starts_the_node(ros_executor: SpinningExecutor) -> None:
    import yaml
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.perception import PerceptionNode

    path = Path(__file__).resolve().parents[1] / "config" / "perception.yaml"
    values = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    node = ros_executor.add(PerceptionNode(
        context=ros_executor.context,
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))
    assert node.finder_config.marker_length_m == values["marker_length_m"]
    assert list(node.finder_config.detector.marker_ids) == values["dock_marker_ids"]
    assert node.check_config.region == tuple(values["compartment_region"])
