"""perception: the robot's seeing; dock markers, the recipient's QR code, the compartment.

A thin rclpy wrapper around the core: `fiducial_docking.DockFinder`, `qr_handoff.QrScanner`
and `TokenGate`, `compartment_check.CompartmentChecker` and `OccupancyFilter`.

Inputs
- `camera/image_raw` + `camera/camera_info` (SENSOR): the front camera. Every frame is searched
  for dock markers (those of `dock_marker_ids`); while `robot_state` says
  MODE_AWAITING_RECIPIENT (and names an order), also for the recipient's QR code.
- `compartment_camera/image_raw` (SENSOR): the fixed camera inside the compartment, judged at
  most `compartment_rate_hz` times a second against the empty reference image
  (`compartment_reference_file`, or one captured with `compartment/capture_reference`).
- `robot_state` (RobotState, STATE): the mode and `order_ids[0]`, the order being handed over.

Outputs
- `dock/pose` (geometry_msgs/PoseStamped, reliable, volatile, depth 5, so any subscriber QoS
  matches): the nearest accepted marker as the dock frame (x into the dock face, z up; see
  `fiducial_docking`), stamped with the image's time, in `base_frame` (base_link) through the
  configured `camera_mount`, or with `dock_in_camera_frame` in the image's optical frame.
- `compartment/occupancy` (std_msgs/UInt8, STATE): `CompartmentState.OCCUPANCY_*`, on every
  change and at least every `occupancy_heartbeat_s`; UNKNOWN without a reference, when the
  compartment camera is silent for `compartment_timeout_s`, or when a frame cannot be judged.
- calls `handoff/verify` (VerifyHandoff, METHOD_QR, order_id = robot_state.order_ids[0]) with
  `call_async` for each new token; `TokenGate` keeps a token from being sent again while its
  call is pending, after it was accepted, or within `qr_refused_retry_s` of a refusal.
- service `compartment/capture_reference` (std_srvs/Trigger): the newest compartment frame
  becomes the empty reference (and is written to `compartment_reference_file`, if set, by the
  compartment worker).

Frames never wait in a queue: subscription callbacks only put the message into a one-slot
mailbox per camera (replacing one not yet taken: a dropped frame, counted), and a worker
thread per camera takes the newest and processes it. So the executor is never blocked by
image work, a slow frame costs the frames that arrived meanwhile rather than a growing lag,
and results always refer to the newest image. Publishers and the service client are used
from the workers (rclpy's are thread-safe); the verify answers come back on the executor.
Time for decisions is the node clock (`use_sim_time` honoured).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from delivery_interfaces.msg import RobotState
from delivery_interfaces.srv import VerifyHandoff
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, UInt8
from std_srvs.srv import Trigger

from delivery_robot.compartment_check import (
    CompartmentCheckConfig,
    CompartmentChecker,
    OccupancyFilter,
)
from delivery_robot.compartment_handoff import Occupancy
from delivery_robot.fiducial_docking import (
    REFINE_METHODS,
    CameraModel,
    DetectorConfig,
    DockFinder,
    DockFinderConfig,
    MarkerPose,
    RigidTransform,
    camera_mount,
    dock_in_base,
)
from delivery_robot.frame_conversion import is_colour
from delivery_robot.image_buffers import ImageFormatError
from delivery_robot.qr_handoff import QrScanConfig, QrScanner, TokenGate, looks_like_token
from delivery_robot.ros.image_messages import image_to_bgr, image_to_gray
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.qos import SENSOR_QOS, STATE_QOS

BGR_ENCODINGS = ("bgr8", "8UC3")
DOCK_QOS = QoSProfile(depth=5)  # reliable + volatile: matches reliable and best-effort readers
WORKER_POLL_S = 0.1  # workers wake this often to notice shutdown
LOG_THROTTLE_S = 10.0


def _seconds(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


class LatestSlot:
    """A mailbox holding only the newest message: a new one replaces one not yet taken."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._message: Any = None
        self.received = 0
        self.dropped = 0

    def put(self, message: Any) -> None:
        with self._condition:
            if self._message is not None:
                self.dropped += 1
            self._message = message
            self.received += 1
            self._condition.notify()

    def take(self, timeout: float) -> Any:
        with self._condition:
            if self._message is None:
                self._condition.wait(timeout)
            message, self._message = self._message, None
            return message


@dataclass(frozen=True)
class _Awaiting:
    order_id: str
    generation: int  # changes with every new recipient: the worker then resets its scanner


class PerceptionNode(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("perception", **node_options)
        try:
            self._configure()
        except ValueError:
            self.destroy_node()  # a refused start must not leave a half-made node behind
            raise

    # ---- set-up ------------------------------------------------------------------------------

    def _declare_list(self, name: str, kind: Parameter.Type, default: list[Any],
                      description: str) -> list[Any]:
        """An array parameter that may default to empty (rclpy cannot type an empty list)."""
        value = self.declare_parameter(name, kind, ParameterDescriptor(
            description=description)).value
        return list(default) if value is None else list(value)

    def _configure(self) -> None:
        # Docking.
        defaults = DetectorConfig()
        ids = self._declare_list("dock_marker_ids", Parameter.Type.INTEGER_ARRAY, [],
                                 "Marker ids that are docks (chargers, pickup points); "
                                 "empty: every marker of the dictionary")
        detector = DetectorConfig(
            dictionary=str(declare(self, "marker_dictionary", defaults.dictionary,
                                   "cv2.aruco dictionary of the dock markers")),
            marker_ids=tuple(int(i) for i in ids),
            aruco3=bool(declare(self, "aruco3", defaults.aruco3,
                                "Full-frame searches on a scaled image (ArUco3)")),
            min_marker_fraction=float(declare(
                self, "min_marker_fraction", defaults.min_marker_fraction,
                "Smallest marker a full-frame search finds, share of the larger image side")),
            canonical_side_px=int(declare(self, "canonical_side_px", defaults.canonical_side_px,
                                          "... searched at this side in px "
                                          "(minSideLengthCanonicalImg)")),
            track=bool(declare(self, "roi_tracking", defaults.track,
                               "Search around the last markers first; full frame on loss")),
            roi_margin=float(declare(self, "roi_margin", defaults.roi_margin,
                                     "Tracking region: marker boxes grown by this many sides")),
            refine=str(declare(self, "corner_refinement", defaults.refine,
                               f"Corner refinement, one of {', '.join(REFINE_METHODS)}")),
            tone_gamma=float(declare(self, "tone_gamma", defaults.tone_gamma,
                                     "The camera's tone curve (1: linear, 2.2: sRGB)")))
        self.finder_config = DockFinderConfig(
            detector, float(declare(self, "marker_length_m", 0.20,
                                    "Side of the dock markers' black square, m")),
            float(declare(self, "max_reprojection_error_px", 2.0,
                          "Marker fits worse than this are dropped, px")))
        mount = self._declare_list("camera_mount", Parameter.Type.DOUBLE_ARRAY,
                                   [0.30, 0.0, 0.45, 0.0, 0.0, 0.0],
                                   "Front camera body (x forward) in base_frame: "
                                   "[x, y, z, roll, pitch, yaw], m and rad")
        if len(mount) != 6 or not all(math.isfinite(float(v)) for v in mount):
            raise ValueError(f"camera_mount: needs 6 finite numbers, got {mount}")
        self.base_from_camera: RigidTransform = camera_mount(*(float(v) for v in mount))
        self.base_frame = str(declare(self, "base_frame", "base_link",
                                      "Frame of dock/pose (through camera_mount)"))
        self.dock_in_camera_frame = bool(declare(
            self, "dock_in_camera_frame", False,
            "Publish dock/pose in the image's optical frame instead of base_frame"))

        # QR handoff.
        qr_defaults = QrScanConfig()
        self.qr_config = QrScanConfig(
            roi_width=float(declare(self, "qr_roi_width", qr_defaults.roi_width,
                                    "Middle region searched for a QR code, share of width")),
            roi_height=float(declare(self, "qr_roi_height", qr_defaults.roi_height,
                                     "... and of height")),
            full_frame_every=int(declare(self, "qr_full_frame_every",
                                         qr_defaults.full_frame_every,
                                         "Every n-th empty scan searches the whole frame "
                                         "(0: never)")),
            reuse_s=float(declare(self, "qr_reuse_s", qr_defaults.reuse_s,
                                  "A code where the last was decoded is the same for this "
                                  "long, s")))
        self.gate = TokenGate(
            float(declare(self, "qr_refused_retry_s", 5.0,
                          "A refused token is sent again only after this, s")),
            float(declare(self, "verify_timeout_s", 5.0,
                          "A handoff/verify call unanswered this long counts as lost, s")))

        # Compartment.
        region = self._declare_list("compartment_region", Parameter.Type.DOUBLE_ARRAY,
                                    [0.0, 0.0, 1.0, 1.0],
                                    "Part of the compartment view that holds goods: "
                                    "[x0, y0, x1, y1] as shares of the image")
        check_defaults = CompartmentCheckConfig()
        if len(region) != 4:
            raise ValueError(f"compartment_region: needs 4 numbers, got {region}")
        self.check_config = CompartmentCheckConfig(
            region=(float(region[0]), float(region[1]), float(region[2]), float(region[3])),
            area_fraction=float(declare(self, "compartment_area_fraction",
                                        check_defaults.area_fraction,
                                        "Changed share of the region that means goods "
                                        "(calibrated)")),
            edge_fraction=float(declare(self, "compartment_edge_fraction",
                                        check_defaults.edge_fraction,
                                        "Changed-edge share of the region that means goods "
                                        "(calibrated)")),
            min_level=float(declare(self, "compartment_min_level", check_defaults.min_level,
                                    "Mean grey below which the view is too dark to judge")))
        self.reference_file = str(declare(self, "compartment_reference_file", "",
                                          "Image of the empty compartment (PNG); written by "
                                          "compartment/capture_reference"))
        rate = float(declare(self, "compartment_rate_hz", 2.0,
                             "Compartment checks per second, at most"))
        if not rate > 0:
            raise ValueError(f"compartment_rate_hz: must be > 0, got {rate}")
        self.compartment_period = 1.0 / rate
        self.compartment_timeout_s = float(declare(
            self, "compartment_timeout_s", 2.0,
            "No compartment frame for this long: occupancy UNKNOWN, s"))
        self.occupancy_heartbeat_s = float(declare(
            self, "occupancy_heartbeat_s", 0.5, "compartment/occupancy at least this often, s"))
        self.occupancy_filter = OccupancyFilter(int(declare(
            self, "compartment_confirm_frames", 2,
            "Checks in a row that must agree before occupancy changes")))
        for name in ("compartment_timeout_s", "occupancy_heartbeat_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0")

        self._lock = threading.Lock()  # state shared by workers and executor callbacks
        self._camera_key: tuple[Any, ...] | None = None  # the newest CameraInfo's fields
        self._camera: tuple[Any, CameraModel | None] | None = None  # model made from it
        self._finder: DockFinder | None = None
        self._scanner = QrScanner(self.qr_config)  # used by the front worker only
        self._scanner_generation = 0
        self._awaiting: _Awaiting | None = None
        self._generation = 0
        self._checker: CompartmentChecker | None = None
        self._last_compartment_frame: np.ndarray | None = None
        self._compartment_seen: float | None = None  # last compartment frame received
        self._compartment_checked: float | None = None  # last one judged (rate limit)
        self._occupancy = Occupancy.UNKNOWN
        self._occupancy_published_at: float | None = None
        self._pending_write: tuple[Path, np.ndarray] | None = None
        self._warned: dict[str, float] = {}
        self.frames_processed = 0
        self.docks_published = 0
        self.verify_calls = 0
        self.compartment_checks = 0
        if self.reference_file and Path(self.reference_file).exists():
            self._load_reference(Path(self.reference_file))

        self.dock_publisher = self.create_publisher(PoseStamped, "dock/pose", DOCK_QOS)
        self.occupancy_publisher = self.create_publisher(UInt8, "compartment/occupancy",
                                                         STATE_QOS)
        self.verify_client = self.create_client(VerifyHandoff, "handoff/verify")
        self._front = LatestSlot()
        self._compartment = LatestSlot()
        self.create_subscription(Image, "camera/image_raw", self._front.put, SENSOR_QOS)
        self.create_subscription(CameraInfo, "camera/camera_info", self._on_camera_info,
                                 SENSOR_QOS)
        self.create_subscription(Image, "compartment_camera/image_raw", self._compartment.put,
                                 SENSOR_QOS)
        self.create_subscription(RobotState, "robot_state", self._on_robot_state, STATE_QOS)
        self.create_service(Trigger, "compartment/capture_reference", self._on_capture)
        self.create_timer(self.occupancy_heartbeat_s / 2, self._on_heartbeat)
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(target=self._worker, args=(self._front, self._process_front),
                             name="perception-front", daemon=True),
            threading.Thread(target=self._worker,
                             args=(self._compartment, self._process_compartment),
                             name="perception-compartment", daemon=True),
        ]
        for worker in self._workers:
            worker.start()
        self._publish_occupancy(Occupancy.UNKNOWN, self._now())
        self.get_logger().info(
            f"perception up: dock markers {detector.dictionary} "
            f"{list(detector.marker_ids) or 'all'} of {self.finder_config.marker_length_m} m; "
            f"compartment reference {'loaded' if self._checker else 'missing (UNKNOWN)'}")

    # ---- helpers -----------------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _warn(self, key: str, text: str) -> None:
        """A warning at most every LOG_THROTTLE_S (node clock) per kind."""
        now = self.get_clock().now().nanoseconds * 1e-9
        last = self._warned.get(key)
        if last is None or now - last >= LOG_THROTTLE_S or now < last:
            self._warned[key] = now
            self.get_logger().warning(text)

    def _worker(self, slot: LatestSlot, process: Any) -> None:
        while not self._stop.is_set():
            message = slot.take(WORKER_POLL_S)
            if message is None:
                continue
            try:
                process(message)
            except (ValueError, ImageFormatError, cv2.error) as error:
                self._warn(f"frame-{threading.current_thread().name}",
                           f"frame not processed: {error}")

    # ---- front camera: docking and QR --------------------------------------------------------

    def _on_camera_info(self, message: CameraInfo) -> None:
        key = (int(message.width), int(message.height), tuple(float(v) for v in message.k),
               tuple(float(v) for v in message.d), message.distortion_model or "plumb_bob")
        with self._lock:
            self._camera_key = key

    def _camera_for(self, width: int, height: int) -> CameraModel | None:
        """The camera model of the newest CameraInfo for frames of this size (drivers that
        leave CameraInfo's size at 0 mean the image's)."""
        with self._lock:
            key = self._camera_key
            cached = self._camera
        if key is None:
            self._warn("no_camera_info", "no camera/camera_info yet: markers are not measured")
            return None
        if cached is not None and cached[0] == (key, width, height):
            return cached[1]
        info_w, info_h, k, d, model = key
        try:
            camera = CameraModel(info_w or width, info_h or height, k, d, model)
            if (camera.width, camera.height) != (width, height):
                camera = camera.scaled(width, height)  # e.g. a binned or resized stream
        except ValueError as error:
            self._warn("camera_info", f"camera_info not usable, no dock poses: {error}")
            camera = None
        with self._lock:
            self._camera = ((key, width, height), camera)
        return camera

    def _process_front(self, message: Image) -> None:
        with self._lock:
            awaiting = self._awaiting
        if awaiting is None and message.encoding in BGR_ENCODINGS:
            frame = image_to_bgr(message)  # a view: the finder greys only what it searches
        else:
            frame = image_to_gray(message)  # the QR scanner needs the grey frame anyway
        self.frames_processed += 1
        camera = self._camera_for(frame.shape[1], frame.shape[0])
        if camera is not None:
            if self._finder is None:
                self._finder = DockFinder(self.finder_config, camera)
            else:
                self._finder.set_camera(camera)
            poses = self._finder.find(frame)
            if poses:
                self._publish_dock(poses[0], message.header)
        if awaiting is None:
            return
        gray = frame
        if awaiting.generation != self._scanner_generation:
            self._scanner.reset()
            self._scanner_generation = awaiting.generation
        now = self._now()
        scan = self._scanner.scan(gray, now)
        for payload in scan.payloads:
            if not looks_like_token(payload):
                self._warn("not_token", "a QR code in view is not a delivery token; ignored")
                continue
            self._send_token(awaiting, payload, now)

    def _publish_dock(self, pose: MarkerPose, header: Header) -> None:
        if self.dock_in_camera_frame:
            # The marker frame turned into the dock frame, still in the optical frame.
            dock = dock_in_base(pose.camera_from_marker, RigidTransform())
            frame = header.frame_id
        else:
            dock = dock_in_base(pose.camera_from_marker, self.base_from_camera)
            frame = self.base_frame
        x, y, z, w = dock.quaternion()
        t = dock.translation
        self.dock_publisher.publish(PoseStamped(
            header=Header(stamp=header.stamp, frame_id=frame),
            pose=Pose(position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                      orientation=Quaternion(x=x, y=y, z=z, w=w))))
        self.docks_published += 1

    def _on_robot_state(self, message: RobotState) -> None:
        order = None
        if message.mode == RobotState.MODE_AWAITING_RECIPIENT and message.order_ids:
            order = str(message.order_ids[0])
        with self._lock:
            before = self._awaiting
            if (before.order_id if before else None) == order:
                return
            # Another order (or none): the scanner forgets the old code, the gate its tokens.
            self._generation += 1
            self._awaiting = _Awaiting(order, self._generation) if order is not None else None
            self.gate.reset()

    def _send_token(self, awaiting: _Awaiting, token: str, now: float) -> None:
        order_id = awaiting.order_id
        with self._lock:
            if self._awaiting != awaiting:
                return  # robot_state moved on while this frame was processed
            if not self.gate.should_send(token, now):
                return
            if not self.verify_client.service_is_ready():
                self._warn("verify_missing", "handoff/verify is not available; QR code not "
                           "checked")
                return
            self.gate.sent(token, now)
        request = VerifyHandoff.Request(order_id=order_id, method=VerifyHandoff.Request.METHOD_QR,
                                        credential=token)
        self.verify_calls += 1
        future = self.verify_client.call_async(request)
        future.add_done_callback(lambda done: self._on_verified(awaiting, token, done))
        # Never the token itself in the log: it opens the compartment.
        self.get_logger().info(f"QR code read; asking handoff/verify for order {order_id}")

    def _on_verified(self, awaiting: _Awaiting, token: str, future: Future) -> None:
        now = self._now()
        order_id = awaiting.order_id
        try:
            response = future.result()
        except Exception as error:  # the call failed (service gone): may be sent again
            response = None
            self._warn("verify_failed", f"handoff/verify failed: {error}")
        with self._lock:
            if self._awaiting == awaiting:  # the gate was reset for another order meanwhile
                if response is None:
                    self.gate.lost(token, now)
                else:
                    self.gate.answered(token, bool(response.granted), now)
        if response is None:
            return
        if response.granted:
            self.get_logger().info(f"QR code accepted for order {order_id}")
        else:
            self.get_logger().warning(
                f"QR code refused for order {order_id}: {response.error_code} "
                f"({response.message})")

    # ---- compartment -------------------------------------------------------------------------

    def _load_reference(self, path: Path) -> None:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"compartment_reference_file: cannot read {path}")
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        self._checker = CompartmentChecker(np.asarray(image, dtype=np.uint8), self.check_config)

    def _process_compartment(self, message: Image) -> None:
        now = self._now()
        with self._lock:
            self._compartment_seen = now
            last = self._compartment_checked
            pending, self._pending_write = self._pending_write, None
        if pending is not None:  # a captured reference to save, off the executor
            path, image = pending
            if not cv2.imwrite(str(path), image):
                self._warn("reference_write", f"could not write the reference to {path}")
        if last is not None and 0 <= now - last < self.compartment_period * 0.9:
            return  # rate limit: the compartment changes slowly
        frame = image_to_bgr(message) if is_colour(message.encoding) else image_to_gray(
            message)
        with self._lock:
            self._compartment_checked = now
            self._last_compartment_frame = frame
            checker = self._checker
        if checker is None:
            self._warn("no_reference", "no empty-compartment reference: occupancy UNKNOWN "
                       "(capture one with compartment/capture_reference)")
            self._set_occupancy(Occupancy.UNKNOWN, now)
            return
        if frame.ndim != len(checker.reference_shape):
            ref = checker.reference_shape
            frame = (cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if len(ref) == 2
                     else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
        verdict = checker.check(frame)
        self.compartment_checks += 1
        if verdict.occupancy is Occupancy.UNKNOWN:
            self._warn("compartment_unknown", f"compartment not judged: {verdict.reason}")
        with self._lock:
            occupancy = self.occupancy_filter.update(verdict.occupancy)
        self._set_occupancy(occupancy, now)

    def _on_capture(self, request: Trigger.Request, response: Trigger.Response
                    ) -> Trigger.Response:
        with self._lock:
            frame = self._last_compartment_frame
        if frame is None:
            response.success = False
            response.message = "no compartment camera frame yet"
            return response
        try:
            checker = CompartmentChecker(frame.copy(), self.check_config)
        except ValueError as error:
            response.success = False
            response.message = f"frame not usable as a reference: {error}"
            return response
        with self._lock:
            self._checker = checker
            self.occupancy_filter = OccupancyFilter(self.occupancy_filter.frames)
            if self.reference_file:
                self._pending_write = (Path(self.reference_file), frame.copy())
        response.success = True
        response.message = ("empty reference captured" +
                            (f"; saving to {self.reference_file}" if self.reference_file else
                             " (not saved: compartment_reference_file is empty)"))
        self.get_logger().info(response.message)
        return response

    def _set_occupancy(self, occupancy: Occupancy, now: float) -> None:
        with self._lock:
            changed = occupancy != self._occupancy
        if changed:
            self._publish_occupancy(occupancy, now)

    def _publish_occupancy(self, occupancy: Occupancy, now: float) -> None:
        with self._lock:
            self._occupancy = occupancy
            self._occupancy_published_at = now
        self.occupancy_publisher.publish(UInt8(data=int(occupancy)))

    def _on_heartbeat(self) -> None:
        now = self._now()
        with self._lock:
            seen = self._compartment_seen
            occupancy = self._occupancy
            published = self._occupancy_published_at
        if occupancy is not Occupancy.UNKNOWN and (
                seen is None or now - seen > self.compartment_timeout_s):
            self._warn("compartment_silent", "no compartment camera frames: occupancy UNKNOWN")
            with self._lock:
                self.occupancy_filter.update(Occupancy.UNKNOWN)
            self._publish_occupancy(Occupancy.UNKNOWN, now)
            return
        if published is None or now - published >= self.occupancy_heartbeat_s or now < published:
            self._publish_occupancy(occupancy, now)

    # ---- shutdown ----------------------------------------------------------------------------

    @property
    def frames_dropped(self) -> int:
        return self._front.dropped + self._compartment.dropped

    def destroy_node(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            for worker in self._workers:
                worker.join(timeout=5.0)
        super().destroy_node()


def main() -> int:
    return run_node(PerceptionNode)


if __name__ == "__main__":
    raise SystemExit(main())
