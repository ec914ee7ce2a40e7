"""Contract test of the nav2 backend adapter (`delivery_robot.adapters.nav2_navigator`).

nav2_simple_commander cannot be installed here, so the adapter is driven against
`StandInBasicNavigator`: a stand-in with BasicNavigator's exact method names and signatures
(Jazzy: goThroughPoses, followWaypoints, goToPose, isTaskComplete, getFeedback, getResult,
cancelTask, waitUntilNav2Active, lifecycleShutdown, destroyNode) and TaskResult's values
(UNKNOWN=0, SUCCEEDED=1, CANCELED=2, FAILED=3). Feedback objects carry the fields of
nav2_msgs NavigateThroughPoses / FollowWaypoints feedback. What this proves: the adapter calls
only that API, from its own thread, never waits for AMCL, never shuts Nav2's lifecycle down,
and maps every TaskResult to our codes. What it cannot prove: Nav2's own behaviour; that needs
the Gazebo run on a machine with Nav2. The stand-in is injected through the adapter's factory
parameter; nothing is patched globally. No rclpy needed.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ros_harness import wait_for

from delivery_robot.adapters import nav2_navigator as adapter
from delivery_robot.adapters.nav2_navigator import Nav2Navigator, Nav2Task, route_poses
from delivery_robot.route_graph import RouteGraph, load_route_graph
from delivery_robot.route_planner import NavCode, Pose2D, RoutePlanner

TOWN = Path(__file__).resolve().parents[1] / "config" / "worlds" / "town.yaml"
START = Pose2D(-28.0, 5.5, 0.0)  # walk_n_bakery, facing east
GOAL = "shop_pharmacy"  # east along the sidewalk, then north up the spur


class TaskResult(Enum):
    """nav2_simple_commander.robot_navigator.TaskResult (Jazzy)."""

    UNKNOWN = 0
    SUCCEEDED = 1
    CANCELED = 2
    FAILED = 3


class StandInBasicNavigator:
    """BasicNavigator's API with scripted behaviour; records every call and its thread."""

    def __init__(self, result: TaskResult = TaskResult.SUCCEEDED, polls: int = 3,
                 accept: bool = True, feedback: Callable[[int], Any] | None = None) -> None:
        self.result = result
        self.polls = polls  # isTaskComplete() answers False this often; < 0: until canceled
        self.accept = accept
        self.feedback_of = feedback
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.threads: set[str] = set()
        self.sent_poses: list[Any] = []
        self._polled = 0
        self._canceled = False

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        self.threads.add(threading.current_thread().name)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    # -- BasicNavigator's methods, same names and signatures --
    def goThroughPoses(self, poses: Any, behavior_tree: str = "") -> bool:  # noqa: N802
        self._record("goThroughPoses", poses, behavior_tree=behavior_tree)
        self.sent_poses = list(poses)
        self._polled = 0
        return self.accept

    def followWaypoints(self, poses: Any) -> bool:  # noqa: N802
        self._record("followWaypoints", poses)
        self.sent_poses = list(poses)
        self._polled = 0
        return self.accept

    def goToPose(self, pose: Any, behavior_tree: str = "") -> bool:  # noqa: N802
        self._record("goToPose", pose, behavior_tree=behavior_tree)
        return self.accept

    def isTaskComplete(self) -> bool:  # noqa: N802
        self._record("isTaskComplete")
        if self._canceled:
            return True
        self._polled += 1
        if self.polls < 0:
            return False  # runs until canceled
        return self._polled > self.polls

    def getFeedback(self) -> Any:  # noqa: N802
        self._record("getFeedback")
        return self.feedback_of(self._polled) if self.feedback_of else None

    def getResult(self) -> TaskResult:  # noqa: N802
        self._record("getResult")
        return TaskResult.CANCELED if self._canceled else self.result

    def cancelTask(self) -> None:  # noqa: N802
        self._record("cancelTask")
        self._canceled = True

    def waitUntilNav2Active(  # noqa: N802
        self, navigator: str = "bt_navigator", localizer: str = "amcl"
    ) -> None:
        self._record("waitUntilNav2Active", navigator=navigator, localizer=localizer)

    def lifecycleShutdown(self) -> None:  # noqa: N802
        self._record("lifecycleShutdown")

    def destroyNode(self) -> None:  # noqa: N802
        self._record("destroyNode")


def through_poses_feedback(poll: int) -> Any:
    """NavigateThroughPoses.Feedback's fields (Jazzy)."""
    pose = SimpleNamespace(position=SimpleNamespace(x=-20.0, y=5.5, z=0.0),
                           orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0))
    return SimpleNamespace(
        current_pose=SimpleNamespace(header=SimpleNamespace(frame_id="map"), pose=pose),
        navigation_time=SimpleNamespace(sec=poll, nanosec=0),
        estimated_time_remaining=SimpleNamespace(sec=12, nanosec=500_000_000),
        number_of_recoveries=0,
        distance_remaining=15.0 - poll,
        number_of_poses_remaining=2,
    )


@pytest.fixture(scope="module")
def route() -> RouteGraph:
    return load_route_graph(TOWN, validate=False)


@pytest.fixture
def planner(route: RouteGraph) -> RoutePlanner:
    return RoutePlanner(route)


def run(planner: RoutePlanner, stand_in: StandInBasicNavigator, goal: Any = GOAL,
        **options: Any) -> tuple[Nav2Navigator, Nav2Task]:
    nav = Nav2Navigator(planner, lambda: stand_in, poll_period_s=0.001, **options)
    task = nav.start(goal, START, 0.0)
    return nav, task


def finish(nav: Nav2Navigator, task: Nav2Task) -> None:
    wait_for(lambda: task.done, 5.0, "the nav2 task to finish")
    nav.shutdown()


def test_stand_in_has_basic_navigators_api() -> None:
    """The stand-in's names and parameters are BasicNavigator's, and the adapter's Protocol
    asks for nothing else."""
    expected = {
        "goThroughPoses": ["poses", "behavior_tree"], "followWaypoints": ["poses"],
        "goToPose": ["pose", "behavior_tree"], "isTaskComplete": [], "getFeedback": [],
        "getResult": [], "cancelTask": [], "waitUntilNav2Active": ["navigator", "localizer"],
        "lifecycleShutdown": [], "destroyNode": [],
    }
    for name, params in expected.items():
        signature = inspect.signature(getattr(StandInBasicNavigator, name))
        assert list(signature.parameters)[1:] == params, name
    protocol = {n for n in vars(adapter.BasicNavigatorLike) if not n.startswith("_")}
    assert protocol <= set(expected)
    assert [(r.name, r.value) for r in TaskResult] == [
        ("UNKNOWN", adapter.TASK_UNKNOWN), ("SUCCEEDED", adapter.TASK_SUCCEEDED),
        ("CANCELED", adapter.TASK_CANCELED), ("FAILED", adapter.TASK_FAILED)]


def test_route_goes_to_nav2_through_our_corners(planner: RoutePlanner) -> None:
    stand_in = StandInBasicNavigator(feedback=through_poses_feedback)
    nav, task = run(planner, stand_in)
    finish(nav, task)
    assert task.outcome == adapter.Nav2Outcome(NavCode.SUCCEEDED, "goal reached (Nav2)")
    names = stand_in.names()
    assert names[0] == "waitUntilNav2Active"
    assert stand_in.calls[0][2]["localizer"] != "amcl"  # never waits for AMCL
    assert "goThroughPoses" in names
    assert "lifecycleShutdown" not in names
    assert names[-1] == "destroyNode"
    assert stand_in.threads == {"nav2-navigator"}  # never the caller's (executor's) thread
    # the poses are our plan's corners, in map, ending at the shop facing its door
    plan = task.plan
    assert plan is not None
    xy = [(round(p.pose.position.x, 3), round(p.pose.position.y, 3)) for p in stand_in.sent_poses]
    assert xy[-1] == (-12.0, 8.0)
    # the corner onto the shop's spur; town keeps robots 0.5 m right there (route graph)
    assert math.dist(xy[-2], (-12.0, 5.5)) <= 0.5 + 1e-6
    assert all(p.header.frame_id == "map" for p in stand_in.sent_poses)
    last = stand_in.sent_poses[-1].pose.orientation
    assert math.isclose(2.0 * math.atan2(last.z, last.w), math.pi / 2, abs_tol=1e-3)
    assert len(route_poses(plan)) == len(stand_in.sent_poses)
    # success: nothing left
    assert task.progress.distance_remaining == 0.0
    assert task.progress.eta_s == 0.0


def test_feedback_is_translated(planner: RoutePlanner) -> None:
    stand_in = StandInBasicNavigator(polls=-1, feedback=through_poses_feedback)
    nav, task = run(planner, stand_in)
    wait_for(lambda: task.progress.pose is not None, 5.0, "feedback from the stand-in")
    progress = task.progress
    assert progress.pose == Pose2D(-20.0, 5.5, 0.0)
    assert progress.eta_s == pytest.approx(12.5)
    assert progress.distance_remaining <= 15.0
    # 2 of N poses remaining: Nav2 heads for the second-last corner, on the sidewalk
    assert progress.current_lane == "walk_n_bakery->walk_n_pharmacy"
    task.cancel()
    finish(nav, task)


def test_follow_waypoints_mode(planner: RoutePlanner) -> None:
    stand_in = StandInBasicNavigator(
        feedback=lambda _poll: SimpleNamespace(current_waypoint=1))
    nav, task = run(planner, stand_in, mode="waypoints")
    finish(nav, task)
    assert "followWaypoints" in stand_in.names()
    assert "goThroughPoses" not in stand_in.names()
    assert task.outcome is not None
    assert task.outcome.code is NavCode.SUCCEEDED


def test_cancel_calls_cancel_task(planner: RoutePlanner) -> None:
    stand_in = StandInBasicNavigator(polls=-1)
    nav, task = run(planner, stand_in)
    wait_for(lambda: "isTaskComplete" in stand_in.names(), 5.0, "the task to run")
    task.cancel()
    finish(nav, task)
    assert "cancelTask" in stand_in.names()
    assert task.outcome is not None
    assert task.outcome.code is NavCode.CANCELED


@pytest.mark.parametrize(("result", "code", "words"), [
    (TaskResult.FAILED, NavCode.FAILED, "aborted"),
    (TaskResult.UNKNOWN, NavCode.FAILED, "UNKNOWN"),
    (TaskResult.CANCELED, NavCode.CANCELED, "canceled"),
])
def test_task_results_map_to_our_codes(
    planner: RoutePlanner, result: TaskResult, code: NavCode, words: str
) -> None:
    stand_in = StandInBasicNavigator(result=result)
    nav, task = run(planner, stand_in)
    finish(nav, task)
    assert task.outcome is not None
    assert task.outcome.code is code
    assert words in task.outcome.message


def test_rejected_goal_fails(planner: RoutePlanner) -> None:
    stand_in = StandInBasicNavigator(accept=False)
    nav, task = run(planner, stand_in)
    finish(nav, task)
    assert task.outcome is not None
    assert task.outcome.code is NavCode.FAILED
    assert "rejected" in task.outcome.message
    assert "isTaskComplete" not in stand_in.names()


def test_unknown_waypoint_is_no_path_without_asking_nav2(planner: RoutePlanner) -> None:
    stand_in = StandInBasicNavigator()
    nav, task = run(planner, stand_in, goal="nowhere")
    assert task.outcome is not None
    assert task.outcome.code is NavCode.NO_PATH
    assert "nowhere" in task.outcome.message
    nav.shutdown()
    assert "goThroughPoses" not in stand_in.names()


def test_goals_run_one_at_a_time_in_order(planner: RoutePlanner) -> None:
    stand_in = StandInBasicNavigator(polls=-1)
    nav = Nav2Navigator(planner, lambda: stand_in, poll_period_s=0.001)
    first = nav.start(GOAL, START, 0.0)
    second = nav.start("shop_bakery", START, 0.0)
    wait_for(lambda: "isTaskComplete" in stand_in.names(), 5.0, "the first task to run")
    assert stand_in.names().count("goThroughPoses") == 1
    first.cancel()
    wait_for(lambda: first.done and stand_in.names().count("goThroughPoses") == 2, 5.0,
             "the second task to start")
    second.cancel()
    finish(nav, second)
    assert second.outcome is not None
    assert second.outcome.code is NavCode.CANCELED


def test_a_navigator_that_cannot_start_fails_every_goal(planner: RoutePlanner) -> None:
    def broken() -> Any:
        raise RuntimeError("no Nav2 here")

    nav = Nav2Navigator(planner, broken, poll_period_s=0.001)
    wait_for(lambda: bool(nav.error), 5.0, "the worker to give up")
    task = nav.start(GOAL, START, 0.0)
    assert task.outcome is not None
    assert task.outcome.code is NavCode.FAILED
    assert "no Nav2 here" in task.outcome.message
    nav.shutdown()


def test_shutdown_cancels_the_running_goal(planner: RoutePlanner) -> None:
    stand_in = StandInBasicNavigator(polls=-1)
    nav, task = run(planner, stand_in)
    wait_for(lambda: "isTaskComplete" in stand_in.names(), 5.0, "the task to run")
    nav.shutdown()
    assert task.outcome is not None
    assert task.outcome.code is NavCode.CANCELED
    assert stand_in.names()[-1] == "destroyNode"
    assert "lifecycleShutdown" not in stand_in.names()
