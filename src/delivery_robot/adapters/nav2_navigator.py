"""The `nav2` backend of the navigation node: our route, driven by Nav2 through
nav2_simple_commander's BasicNavigator.

The only module that touches nav2_simple_commander, and only inside `basic_navigator_factory`'s
factory, so machines without Nav2 (this venv, the headless sim) never import it.

Why the shape:
- We plan the route ourselves (`RoutePlanner`: lane limits, one-way lanes, closures, geofence,
  crosswalks), then hand Nav2 the route's corner poses (`goThroughPoses`, or `followWaypoints`
  with `mode="waypoints"`), so Nav2 drives our lanes instead of its own shortest costmap path.
- BasicNavigator is a Node that spins itself inside its calls (`goThroughPoses` waits for the
  action server, `isTaskComplete` spins up to 0.1 s, `cancelTask` spins until answered). It
  must never run in an executor callback of ours, so ONE worker thread owns it: the thread
  makes it (through the factory), waits for Nav2, runs the goals one after another, and the
  node's timer only reads each task's thread-safe snapshot (`Nav2Task.progress` / `.outcome`).
- We never wait for AMCL (the robots localise with robot_localization / GNSS):
  `waitUntilNav2Active(localizer="robot_localization")` skips the localiser and initial-pose
  waits and only waits for bt_navigator.
- We never call `lifecycleShutdown()`: Nav2's lifecycle belongs to the launch file, and our
  node exiting must not bring down Nav2 on the robot. Shutdown only destroys our BasicNavigator.

TaskResult (nav2_simple_commander: UNKNOWN=0, SUCCEEDED=1, CANCELED=2, FAILED=3) is read by
value, so this module needs no import of it; `tests/test_nav2_adapter.py` is the contract test.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from geometry_msgs.msg import PoseStamped

from delivery_robot.route_planner import Goal, NavCode, NoPath, Plan, Pose2D, RoutePlanner

# nav2_simple_commander.robot_navigator.TaskResult values (checked by the contract test).
TASK_UNKNOWN, TASK_SUCCEEDED, TASK_CANCELED, TASK_FAILED = 0, 1, 2, 3
_RESULT_CODES: dict[int, tuple[NavCode, str]] = {
    TASK_SUCCEEDED: (NavCode.SUCCEEDED, "goal reached (Nav2)"),
    TASK_CANCELED: (NavCode.CANCELED, "navigation canceled (Nav2)"),
    TASK_FAILED: (NavCode.FAILED, "Nav2 aborted the task"),
    TASK_UNKNOWN: (NavCode.FAILED, "Nav2 reported no result (TaskResult.UNKNOWN)"),
}
_MIN_POSE_SPACING = 1e-3  # m: consecutive route poses closer than this are merged

Mode = Literal["through_poses", "waypoints"]


class BasicNavigatorLike(Protocol):
    """The part of nav2_simple_commander's BasicNavigator (Jazzy) this adapter uses."""

    def goThroughPoses(self, poses: Any, behavior_tree: str = "") -> Any: ...  # noqa: N802
    def followWaypoints(self, poses: Any) -> Any: ...  # noqa: N802
    def isTaskComplete(self) -> bool: ...  # noqa: N802
    def getFeedback(self) -> Any: ...  # noqa: N802
    def getResult(self) -> Any: ...  # noqa: N802
    def cancelTask(self) -> Any: ...  # noqa: N802
    def waitUntilNav2Active(  # noqa: N802
        self, navigator: str = "bt_navigator", localizer: str = "amcl"
    ) -> Any: ...
    def destroyNode(self) -> Any: ...  # noqa: N802


NavigatorFactory = Callable[[], BasicNavigatorLike]


def basic_navigator_factory(node_name: str, namespace: str = "") -> NavigatorFactory:
    """The real BasicNavigator, imported only when called (in the worker thread), with a node
    of its own in the robot's namespace (its action clients then find that robot's Nav2)."""

    def make() -> BasicNavigatorLike:
        from nav2_simple_commander.robot_navigator import (  # type: ignore[import-not-found]
            BasicNavigator,
        )

        navigator: BasicNavigatorLike = BasicNavigator(node_name=node_name, namespace=namespace)
        return navigator

    return make


@dataclass(frozen=True)
class Nav2Progress:
    """What the navigation node turns into `navigate` feedback."""

    distance_remaining: float  # m
    eta_s: float  # s; -1 when unknown
    current_lane: str  # "from->to"; "" off the graph or unknown
    pose: Pose2D | None  # map pose Nav2 reported, None if it did not


@dataclass(frozen=True)
class Nav2Outcome:
    code: NavCode
    message: str


def yaw_of(q: Any) -> float:
    """Yaw (rad) of a geometry_msgs/Quaternion."""
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def pose_stamped(x: float, y: float, yaw: float, frame_id: str = "map") -> PoseStamped:
    """A map-frame PoseStamped; stamp zero = "latest" for Nav2's TF look-ups."""
    msg = PoseStamped()
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y = float(x), float(y)
    msg.pose.orientation.z = math.sin(yaw / 2.0)
    msg.pose.orientation.w = math.cos(yaw / 2.0)
    return msg


@dataclass(frozen=True)
class RoutePose:
    """One pose handed to Nav2: where, and what our plan knows about reaching it."""

    x: float
    y: float
    yaw: float
    s: float  # arc length along our plan (m)
    lane: str  # lane that ends here ("" off the graph)


def route_poses(plan: Plan) -> list[RoutePose]:
    """The corners of our plan (each segment's end, heading along it) and the goal pose."""
    out: list[RoutePose] = []
    for seg in plan.segments:
        (ax, ay), (bx, by) = seg.points[-2], seg.points[-1]
        yaw = math.atan2(by - ay, bx - ax)
        if out and math.hypot(bx - out[-1].x, by - out[-1].y) < _MIN_POSE_SPACING:
            out[-1] = RoutePose(bx, by, yaw, seg.s_end, seg.lane_name)
        else:
            out.append(RoutePose(bx, by, yaw, seg.s_end, seg.lane_name))
    gx, gy = plan.goal
    if not out:
        return [RoutePose(gx, gy, plan.goal_yaw or 0.0, 0.0, "")]
    if plan.goal_yaw is not None:
        last = out[-1]
        out[-1] = RoutePose(last.x, last.y, plan.goal_yaw, last.s, last.lane)
    return out


class Nav2Task:
    """One goal handed to Nav2. Written by the worker thread, read by the node: every field
    is replaced whole under a lock, so readers always see a consistent snapshot."""

    def __init__(self, plan: Plan | None, poses: Sequence[RoutePose]) -> None:
        self.plan = plan
        self.poses = tuple(poses)
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        length = plan.length if plan else 0.0
        eta = plan.eta_s if plan else -1.0
        self._progress = Nav2Progress(length, eta, "", None)
        self._outcome: Nav2Outcome | None = None

    @property
    def progress(self) -> Nav2Progress:
        with self._lock:
            return self._progress

    @property
    def outcome(self) -> Nav2Outcome | None:
        with self._lock:
            return self._outcome

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the worker to cancel (it calls cancelTask); the outcome follows from Nav2."""
        self._cancel.set()

    def _set_progress(self, progress: Nav2Progress) -> None:
        with self._lock:
            self._progress = progress

    def _finish(self, code: NavCode, message: str) -> None:
        with self._lock:
            if self._outcome is None:
                self._outcome = Nav2Outcome(code, message)


class Nav2Navigator:
    """Plans with our RoutePlanner, drives with Nav2 from a worker thread of its own.

    `start()` is cheap and safe in an executor callback (it plans, then queues the goal);
    goals run one at a time in the order given. `shutdown()` cancels what is running.
    """

    def __init__(
        self,
        planner: RoutePlanner,
        factory: NavigatorFactory,
        *,
        mode: Mode = "through_poses",
        wait_for_nav2: bool = True,
        frame_id: str = "map",
        poll_period_s: float = 0.05,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in ("through_poses", "waypoints"):
            raise ValueError(f"nav2 mode must be 'through_poses' or 'waypoints', got {mode!r}")
        self.planner = planner
        self.mode = mode
        self.frame_id = frame_id
        self.poll_period_s = max(poll_period_s, 0.0)
        self._factory = factory
        self._wait_for_nav2 = wait_for_nav2
        self._log = log or (lambda _msg: None)
        self._jobs: queue.Queue[Nav2Task | None] = queue.Queue()
        self._stop = threading.Event()
        self._current: Nav2Task | None = None
        self._ready = threading.Event()
        self.error: str = ""  # set if the worker could not make or reach the navigator
        self._thread = threading.Thread(target=self._run, name="nav2-navigator", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Nav2 is up (or waiting was disabled) and the worker takes goals."""
        return self._ready.is_set()

    def start(self, goal: Goal, pose: Pose2D, now: float) -> Nav2Task:
        """Plan from `pose` to `goal` now; NO_PATH comes back as a finished task at once."""
        result = self.planner.plan(pose, goal, now)
        if isinstance(result, NoPath):
            task = Nav2Task(None, ())
            task._finish(NavCode.NO_PATH, result.message)
            return task
        task = Nav2Task(result, route_poses(result))
        if self._stop.is_set():
            task._finish(NavCode.FAILED, "the nav2 backend is shut down")
        elif self.error:
            task._finish(NavCode.FAILED, self.error)
        else:
            self._jobs.put(task)
        return task

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Cancel the running goal, stop the worker and destroy our BasicNavigator node.
        A worker still blocked inside BasicNavigator (waiting for Nav2) is left as a daemon."""
        self._stop.set()
        current = self._current
        if current is not None:
            current.cancel()
        self._jobs.put(None)
        self._thread.join(timeout=timeout_s)

    # -- the worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            navigator = self._factory()
        except Exception as error:  # noqa: BLE001 - reported on every goal, not a crash
            self.error = f"cannot create BasicNavigator: {error}"
            self._log(self.error)
            self._drain()
            return
        try:
            if self._wait_for_nav2:
                # Never AMCL: with robot_localization the localiser/initial-pose waits are
                # skipped and only bt_navigator must be active.
                navigator.waitUntilNav2Active(localizer="robot_localization")
            self._ready.set()
            while not self._stop.is_set():
                task = self._jobs.get()
                if task is None:
                    break
                self._current = task
                try:
                    self._drive(navigator, task)
                except Exception as error:  # noqa: BLE001 - one bad goal must not end the thread
                    task._finish(NavCode.FAILED, f"Nav2 error: {error}")
                    self._log(f"nav2 goal failed with an exception: {error!r}")
                finally:
                    self._current = None
        except Exception as error:  # noqa: BLE001 - waitUntilNav2Active failed
            self.error = f"Nav2 not available: {error}"
            self._log(self.error)
        finally:
            self._drain()
            try:
                navigator.destroyNode()
            except Exception as error:  # noqa: BLE001 - shutting down anyway
                self._log(f"BasicNavigator.destroyNode failed: {error!r}")

    def _drain(self) -> None:
        """Finish every queued goal: no task may be left waiting forever."""
        why = self.error or "the nav2 backend is shut down"
        while True:
            try:
                task = self._jobs.get_nowait()
            except queue.Empty:
                return
            if task is not None:
                task._finish(NavCode.FAILED, why)

    def _drive(self, navigator: BasicNavigatorLike, task: Nav2Task) -> None:
        if task.cancel_requested:
            task._finish(NavCode.CANCELED, "navigation canceled before Nav2 started it")
            return
        poses = [pose_stamped(p.x, p.y, p.yaw, self.frame_id) for p in task.poses]
        if self.mode == "waypoints":
            accepted = navigator.followWaypoints(poses)
        else:
            accepted = navigator.goThroughPoses(poses)
        if accepted is False:  # Jazzy returns False on rejection (older versions None)
            task._finish(NavCode.FAILED, f"Nav2 rejected the goal ({len(poses)} poses)")
            return
        cancel_sent = False
        while not navigator.isTaskComplete():
            if (task.cancel_requested or self._stop.is_set()) and not cancel_sent:
                navigator.cancelTask()
                cancel_sent = True
            feedback = navigator.getFeedback()
            if feedback is not None:
                task._set_progress(self._progress(task, feedback))
            if self.poll_period_s > 0.0:
                self._stop.wait(self.poll_period_s)
        raw = navigator.getResult()
        value = int(getattr(raw, "value", raw))
        code, message = _RESULT_CODES.get(value, _RESULT_CODES[TASK_UNKNOWN])
        if code is NavCode.FAILED and cancel_sent:
            code, message = NavCode.CANCELED, f"navigation canceled ({message})"
        if code is NavCode.SUCCEEDED:
            task._set_progress(Nav2Progress(0.0, 0.0, task.progress.current_lane,
                                            task.progress.pose))
        task._finish(code, message)

    def _progress(self, task: Nav2Task, feedback: Any) -> Nav2Progress:
        """Nav2 feedback (NavigateThroughPoses or FollowWaypoints) in our terms."""
        plan = task.plan
        poses = task.poses
        # which of our poses Nav2 is heading for
        index = 0
        remaining_poses = getattr(feedback, "number_of_poses_remaining", None)
        current_waypoint = getattr(feedback, "current_waypoint", None)
        if remaining_poses is not None:
            index = len(poses) - int(remaining_poses)
        elif current_waypoint is not None:
            index = int(current_waypoint)
        index = min(max(index, 0), len(poses) - 1) if poses else 0
        lane = poses[index].lane if poses else ""
        pose: Pose2D | None = None
        current = getattr(feedback, "current_pose", None)
        if current is not None:
            p = current.pose
            pose = Pose2D(p.position.x, p.position.y, yaw_of(p.orientation))
        distance = getattr(feedback, "distance_remaining", None)
        if distance is None or not math.isfinite(float(distance)):
            behind = poses[index - 1].s if index > 0 else 0.0
            distance = (plan.length if plan else 0.0) - behind
        eta = -1.0
        remaining_time = getattr(feedback, "estimated_time_remaining", None)
        if remaining_time is not None:
            eta = float(remaining_time.sec) + float(remaining_time.nanosec) * 1e-9
        return Nav2Progress(max(float(distance), 0.0), eta, lane, pose)
