"""The fleet_sim node through real rclpy: /clock, per-robot topics and services, and the
navigation (+ safety monitor) stack driving a simulated robot through town on sim time.

The simulator runs from its own thread; tests only wait on what it publishes (no sleeps).
Unit tests run it at 10x real time, with the base's command watchdog off so one command keeps
a robot moving; the integration test runs it as fast as possible with the watchdog on.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
from ros_harness import SpinningExecutor, wait_for

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
TOWN = ROOT / "config" / "worlds" / "town.yaml"
SAFETY_YAML = ROOT / "config" / "safety.yaml"
DEPOT = (-48.0, 16.0, math.pi / 2)  # town's depot waypoint: robot1's default start
LIDAR_X = 0.15  # the core's default lidar mount in base_link
RADIUS = 0.35  # the core's default robot radius
GOAL = "walk_n_bakery"  # on the sidewalk, ~24 m from the depot through its exit door
# Sim seconds per wall second of the integration run. As fast as possible (0) outruns this one
# process's executor: the safety monitor's 0.3 s scan watchdog (sim time) then trips at ~10x.
INTEGRATION_RTF = 5.0
# navigation's pose is odometry only (no localisation yet): with the core's default wheel
# errors it ends ~2 m from the goal in truth after 28 m, so this run uses exact odometry.
EXACT_ODOMETRY = {f"odometry.{k}": 0.0 for k in (
    "wheel_noise", "left_scale_error", "right_scale_error", "wheel_base_error")}


def start_sim(ros_executor: SpinningExecutor, **overrides: Any) -> Any:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.fleet_sim import FleetSimNode

    values: dict[str, Any] = {"route_graph_file": str(TOWN), "real_time_factor": 10.0,
                              "kinematics.command_timeout_s": 0.0, "seed": 1}
    values.update(overrides)
    node = FleetSimNode(context=ros_executor.context,
                        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    return ros_executor.add(node)


def sim_seconds(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


class Probe:
    """Keeps the newest message of every fleet_sim topic of some robots, and calls services."""

    def __init__(self, ros_executor: SpinningExecutor, robots: tuple[str, ...] = ("robot1",)
                 ) -> None:
        from delivery_interfaces.msg import CompartmentState
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from nav_msgs.msg import Odometry
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import BatteryState, LaserScan
        from std_msgs.msg import Bool

        from delivery_robot.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS

        self.node = ros_executor.node("fleet_sim_probe")
        self.latest: dict[str, Any] = {}
        self.clock: list[float] = []
        self.node.create_subscription(Clock, "/clock",
                                      lambda m: self.clock.append(sim_seconds(m.clock)), 10)
        topics = [("odom", Odometry, SENSOR_QOS), ("scan", LaserScan, SENSOR_QOS),
                  ("battery_state", BatteryState, SENSOR_QOS),
                  ("ground_truth/pose", PoseStamped, SENSOR_QOS),
                  ("compartment/state", CompartmentState, STATE_QOS),
                  ("estop", Bool, STATE_QOS)]
        self.cmd: dict[str, Any] = {}
        for robot in robots:
            for topic, kind, qos in topics:
                key = f"/{robot}/{topic}"
                self.node.create_subscription(kind, key, self._keeper(key), qos)
            self.cmd[robot] = self.node.create_publisher(TwistStamped, f"/{robot}/cmd_vel_safe",
                                                         COMMAND_QOS)

    def _keeper(self, key: str) -> Any:
        def keep(msg: Any) -> None:
            self.latest[key] = msg
        return keep

    def get(self, robot: str, topic: str) -> Any:
        return self.latest.get(f"/{robot}/{topic}")

    def wait(self, robot: str, topic: str, predicate: Any = lambda m: True,
             timeout: float = 15.0) -> Any:
        wait_for(lambda: (m := self.get(robot, topic)) is not None and predicate(m), timeout,
                 f"/{robot}/{topic} to satisfy the test")
        return self.get(robot, topic)

    def drive(self, robot: str, linear: float, angular: float = 0.0) -> None:
        from geometry_msgs.msg import TwistStamped

        msg = TwistStamped()
        msg.header.frame_id = "base_link"
        msg.twist.linear.x, msg.twist.angular.z = linear, angular
        wait_for(lambda: self.cmd[robot].get_subscription_count() > 0, 10.0,
                 "fleet_sim to subscribe cmd_vel_safe")
        self.cmd[robot].publish(msg)

    def call(self, kind: Any, name: str, request: Any) -> Any:
        client = self.node.create_client(kind, name)
        wait_for(client.service_is_ready, 10.0, f"service {name}")
        future = client.call_async(request)
        wait_for(future.done, 10.0, f"the answer of {name}")
        self.node.destroy_client(client)
        return future.result()

    def sim_now(self) -> float:
        return self.clock[-1] if self.clock else -1.0

    def wait_sim(self, seconds: float, timeout: float = 15.0) -> None:
        """Wait until the sim clock has advanced by `seconds` from now."""
        wait_for(lambda: bool(self.clock), timeout, "/clock")
        target = self.clock[-1] + seconds
        wait_for(lambda: self.clock[-1] >= target, timeout, f"{seconds} s of sim time")


def test_clock_advances_and_stamps_are_sim_time(ros_executor: SpinningExecutor) -> None:
    sim = start_sim(ros_executor)
    probe = Probe(ros_executor)
    wait_for(lambda: len(probe.clock) >= 10, 10.0, "/clock messages")
    assert all(b > a for a, b in zip(probe.clock, probe.clock[1:], strict=False))
    probe.wait_sim(1.0)
    odom = probe.wait(
        "robot1", "odom", lambda m: sim_seconds(m.header.stamp) > probe.clock[0])
    assert odom.header.frame_id == "odom"
    assert odom.child_frame_id == "base_link"
    # Sim time, not wall time (the probe's own /clock queue may lag its odom queue).
    assert sim_seconds(odom.header.stamp) <= sim.sim.time + 1e-6
    assert odom.pose.pose.position.x == pytest.approx(0.0, abs=1e-6)  # odom starts at zero
    truth = probe.wait("robot1", "ground_truth/pose")
    assert truth.header.frame_id == "map"
    assert (truth.pose.position.x, truth.pose.position.y) == pytest.approx(DEPOT[:2], abs=1e-6)
    battery = probe.wait("robot1", "battery_state")
    assert 0.99 <= battery.percentage <= 1.0
    assert battery.voltage > 29.0
    state = probe.wait("robot1", "compartment/state")
    assert (state.lock_state, state.door_closed, state.occupancy) == (
        state.LOCK_LOCKED, True, state.OCCUPANCY_EMPTY)
    assert probe.wait("robot1", "estop").data is False


def test_cmd_vel_safe_moves_only_that_robot(ros_executor: SpinningExecutor) -> None:
    start_sim(ros_executor)
    probe = Probe(ros_executor, ("robot1", "robot2"))
    probe.wait("robot2", "odom")
    before2 = probe.wait("robot2", "ground_truth/pose").pose.position
    probe.drive("robot1", 0.5)
    # Odometry: forward along base_link x (drifting only slightly); truth: north from the depot.
    odom = probe.wait("robot1", "odom", lambda m: m.pose.pose.position.x > 1.0)
    assert abs(odom.pose.pose.position.y) < 0.1
    assert odom.twist.twist.linear.x == pytest.approx(0.5, abs=0.05)
    truth = probe.wait("robot1", "ground_truth/pose", lambda m: m.pose.position.y > 17.0)
    assert truth.pose.position.x == pytest.approx(DEPOT[0], abs=0.1)
    probe.drive("robot1", 0.0)
    probe.wait("robot1", "odom", lambda m: abs(m.twist.twist.linear.x) < 1e-6)
    # robot2 never moved.
    odom2 = probe.get("robot2", "odom")
    assert (odom2.pose.pose.position.x, odom2.pose.pose.position.y) == (0.0, 0.0)
    after2 = probe.get("robot2", "ground_truth/pose").pose.position
    assert (after2.x, after2.y) == (before2.x, before2.y)


def test_scans_have_frame_beams_and_see_a_wall_and_a_robot(
    ros_executor: SpinningExecutor,
) -> None:
    # robot1 in the depot facing east, robot2 3 m ahead of it; the back (north) wall's inner
    # face is at y = 16 + 6.85 - 0.15 = 22.7.
    poses = [-48.0, 16.0, 0.0, -45.0, 16.0, 0.0, -52.0, 21.2, math.pi / 2]
    start_sim(ros_executor, start_poses=poses)
    probe = Probe(ros_executor)
    scan = probe.wait("robot1", "scan")
    assert scan.header.frame_id == "laser"
    assert len(scan.ranges) == 360
    assert scan.angle_increment == pytest.approx(2 * math.pi / 360)
    assert scan.angle_max == pytest.approx(scan.angle_min + 359 * scan.angle_increment)
    assert (scan.range_min, scan.range_max) == (pytest.approx(0.15), pytest.approx(12.0))
    assert scan.scan_time == pytest.approx(0.1)

    def beam(angle: float) -> float:
        k = round((angle - scan.angle_min) / scan.angle_increment) % len(scan.ranges)
        return float(scan.ranges[k])

    assert beam(0.0) == pytest.approx(3.0 - LIDAR_X - RADIUS, abs=0.05)  # robot2's body
    assert beam(math.pi / 2) == pytest.approx(22.7 - 16.0, abs=0.05)  # the back wall
    # Scans keep coming at the lidar rate (10 Hz of sim time).
    first = sim_seconds(scan.header.stamp)
    later = probe.wait("robot1", "scan", lambda m: sim_seconds(m.header.stamp) >= first + 0.5)
    assert (sim_seconds(later.header.stamp) * 10.0) == pytest.approx(
        round(sim_seconds(later.header.stamp) * 10.0), abs=1e-6)


def test_set_lock_changes_compartment_state_and_door_needs_unlock(
    ros_executor: SpinningExecutor,
) -> None:
    from delivery_interfaces.msg import CompartmentState
    from delivery_interfaces.srv import SetLock
    from std_srvs.srv import Trigger

    start_sim(ros_executor)
    probe = Probe(ros_executor)
    probe.wait("robot1", "compartment/state")
    # Locked: the door does not open.
    refused = probe.call(Trigger, "/robot1/sim/open_door", Trigger.Request())
    assert not refused.success
    assert "locked" in refused.message
    # Unlock through the service: answered from the core at once, and published.
    answer = probe.call(SetLock, "/robot1/compartment/set_lock",
                        SetLock.Request(lock=False, requested_by="test"))
    assert answer.success
    assert answer.state.lock_state == CompartmentState.LOCK_UNLOCKED
    probe.wait("robot1", "compartment/state",
               lambda m: m.lock_state == CompartmentState.LOCK_UNLOCKED)
    # Now a person can open the door and load goods; locking with the door open is refused.
    assert probe.call(Trigger, "/robot1/sim/open_door", Trigger.Request()).success
    assert probe.call(Trigger, "/robot1/sim/load", Trigger.Request()).success
    probe.wait("robot1", "compartment/state",
               lambda m: not m.door_closed and m.occupancy == CompartmentState.OCCUPANCY_OCCUPIED)
    refused_lock = probe.call(SetLock, "/robot1/compartment/set_lock",
                              SetLock.Request(lock=True, requested_by="test"))
    assert not refused_lock.success
    assert "door is open" in refused_lock.message
    assert probe.call(Trigger, "/robot1/sim/close_door", Trigger.Request()).success
    locked = probe.call(SetLock, "/robot1/compartment/set_lock",
                        SetLock.Request(lock=True, requested_by="test"))
    assert locked.success
    state = probe.wait("robot1", "compartment/state",
                       lambda m: m.lock_state == CompartmentState.LOCK_LOCKED)
    assert state.door_closed
    assert state.occupancy == CompartmentState.OCCUPANCY_OCCUPIED
    assert state.header.frame_id == "compartment"


def test_estop_stops_the_robot(ros_executor: SpinningExecutor) -> None:
    from std_srvs.srv import SetBool

    start_sim(ros_executor)
    probe = Probe(ros_executor)
    probe.drive("robot1", 0.8)
    probe.wait("robot1", "odom", lambda m: m.twist.twist.linear.x > 0.7)
    assert probe.call(SetBool, "/robot1/sim/estop", SetBool.Request(data=True)).success
    assert probe.wait("robot1", "estop", lambda m: m.data).data
    stopped = probe.wait("robot1", "odom", lambda m: m.twist.twist.linear.x == 0.0)
    # It stays put although the command still asks for 0.8 m/s.
    probe.wait_sim(2.0)
    still = probe.wait("robot1", "odom",
                       lambda m: sim_seconds(m.header.stamp) > sim_seconds(stopped.header.stamp))
    assert still.pose.pose.position.x == pytest.approx(stopped.pose.pose.position.x, abs=1e-9)
    # Released: it drives on.
    assert probe.call(SetBool, "/robot1/sim/estop", SetBool.Request(data=False)).success
    probe.wait("robot1", "estop", lambda m: not m.data)
    probe.wait("robot1", "odom", lambda m: m.pose.pose.position.x > still.pose.pose.position.x
               + 0.2)


def test_refuses_sim_time_and_bad_starts(ros_executor: SpinningExecutor) -> None:
    with pytest.raises(ValueError, match="use_sim_time"):
        start_sim(ros_executor, use_sim_time=True)
    with pytest.raises(ValueError, match="unknown waypoint"):
        start_sim(ros_executor, start_waypoints=["depot", "nowhere", "charger_2"])
    with pytest.raises(ValueError, match="3 numbers per robot"):
        start_sim(ros_executor, start_poses=[0.0, 0.0])


@pytest.mark.slow
def test_navigation_and_safety_monitor_drive_robot1_through_town(
    ros_executor: SpinningExecutor,
) -> None:
    """navigation -> cmd_vel -> safety_monitor (config/safety.yaml) -> cmd_vel_safe -> fleet_sim,
    all on the simulator's /clock (at INTEGRATION_RTF x real time, see there)."""
    import yaml
    from action_msgs.msg import GoalStatus
    from delivery_interfaces.action import Navigate
    from rclpy.action import ActionClient
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.navigation import NavigationNode
    from delivery_robot.nodes.safety_monitor import SafetyMonitorNode
    from delivery_robot.route_planner import NavCode

    safety = yaml.safe_load(SAFETY_YAML.read_text())["/**"]["ros__parameters"]
    safety["laser_pose"] = [LIDAR_X, 0.0, 0.0]  # where the simulator mounts its lidar
    safety["use_sim_time"] = True
    ros_executor.add(SafetyMonitorNode(
        context=ros_executor.context, namespace="robot1",
        parameter_overrides=[Parameter(k, value=v) for k, v in safety.items()]))
    nav_values = {"route_graph_file": str(TOWN), "use_sim_time": True,
                  "odom_to_map": list(DEPOT)}
    ros_executor.add(NavigationNode(
        context=ros_executor.context, namespace="robot1",
        parameter_overrides=[Parameter(k, value=v) for k, v in nav_values.items()]))
    probe = Probe(ros_executor)
    client = ActionClient(probe.node, Navigate, "/robot1/navigate")
    wait_for(client.server_is_ready, 15.0, "the navigate action server")
    sim = start_sim(ros_executor, real_time_factor=INTEGRATION_RTF,
                    **{"kinematics.command_timeout_s": 0.5, **EXACT_ODOMETRY})
    probe.wait("robot1", "odom")

    wall_start, sim_start = time.monotonic(), probe.sim_now()
    sent = client.send_goal_async(Navigate.Goal(waypoint=GOAL))
    wait_for(sent.done, 10.0, "the goal response")
    handle = sent.result()
    assert handle.accepted
    result_future = handle.get_result_async()
    wait_for(result_future.done, 150.0, "navigation to walk_n_bakery")
    wall = time.monotonic() - wall_start
    sim_elapsed = probe.sim_now() - sim_start
    outcome = result_future.result()
    print(f"\nnavigate depot -> walk_n_bakery: {sim_elapsed:.1f} s sim in {wall:.1f} s wall "
          f"({sim_elapsed / wall:.1f}x), {outcome.result.distance_travelled:.1f} m, "
          f"sim steps {sim.steps}, collisions {sim.sim.collision_counts.sum()}")
    assert outcome.status == GoalStatus.STATUS_SUCCEEDED, outcome.result.message
    assert outcome.result.code == NavCode.SUCCEEDED
    truth = probe.wait("robot1", "ground_truth/pose")
    bakery = (-28.0, 5.5)  # walk_n_bakery
    assert math.hypot(truth.pose.position.x - bakery[0],
                      truth.pose.position.y - bakery[1]) < 0.3
    assert int(sim.sim.collision_counts.sum()) == 0
    assert sim_elapsed > wall  # faster than real time


# ---- lockstep, holds, start/pause, driven clocks ----------------------------------------------


def test_lockstep_holds_the_clock_until_the_robots_answer(ros_executor: SpinningExecutor) -> None:
    """The clock advances a step only when cmd_vel_safe stamped with the last /clock arrived
    from every robot; a silent robot is waited for only up to the grace."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TwistStamped

    sim = start_sim(ros_executor, lockstep=True, step_s=0.1, odom_rate_hz=10.0,
                    lockstep_lead_s=0.1, lockstep_grace_s=30.0,
                    lockstep_robots=["robot1", "robot2"])
    probe = Probe(ros_executor, ("robot1", "robot2"))
    wait_for(lambda: probe.cmd["robot1"].get_subscription_count() > 0
             and probe.cmd["robot2"].get_subscription_count() > 0, 10.0, "the subscriptions")

    def answer(robot: str, seconds: float) -> None:
        msg = TwistStamped()
        total = round(seconds * 1e9)
        msg.header.stamp = Time(sec=total // 1_000_000_000, nanosec=total % 1_000_000_000)
        probe.cmd[robot].publish(msg)

    # Nothing can answer the start time (the robots' timers first fire at one period): the
    # first step is free; from then on each needs both answers.
    for step in range(1, 6):
        now = round(step * 0.1, 9)
        wait_for(lambda n=now: sim.sim.time >= n - 1e-9, 10.0, f"sim time {now}")
        # Held: only robot1 has answered the clock of this step.
        answer("robot1", now)
        wait_for(lambda s=step: sim.lockstep_waits >= s, 10.0, "the simulator to wait")
        assert sim.sim.time == pytest.approx(now, abs=1e-9)
        answer("robot2", now)
        wait_for(lambda n=now: sim.sim.time >= n + 0.1 - 1e-9, 10.0, "the next step")
    assert sim.steps == 6
    assert sim.lockstep_stats()["timeouts"] == {}
    # Every /clock is on the step grid, in whole nanoseconds.
    assert all(abs(t * 10 - round(t * 10)) < 1e-6 for t in probe.clock)


def test_a_silent_robot_is_waited_for_only_up_to_the_grace(
    ros_executor: SpinningExecutor,
) -> None:
    sim = start_sim(ros_executor, lockstep=True, step_s=0.1, lockstep_grace_s=0.3,
                    lockstep_robots=["robot2"])
    wait_for(lambda: sim.sim.time >= 1.0, 30.0, "the clock to go on without robot2")
    assert sim.lockstep_stats()["timeouts"] == {"robot2": 1}  # then no longer waited for


def test_hold_keeps_the_clock_until_release(ros_executor: SpinningExecutor) -> None:
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TwistStamped

    sim = start_sim(ros_executor, lockstep=True, step_s=0.1, lockstep_robots=["robot1"],
                    lockstep_grace_s=30.0, start_paused=True)
    probe = Probe(ros_executor)
    # robot1 answers once for all time: only the hold holds the clock.
    forever = TwistStamped()
    forever.header.stamp = Time(sec=1_000_000)
    wait_for(lambda: probe.cmd["robot1"].get_subscription_count() > 0, 10.0, "subscription")
    probe.cmd["robot1"].publish(forever)
    sim.run()
    wait_for(lambda: sim.sim.time >= 0.5, 10.0, "the clock to run")
    sim.hold("person")
    held_at = sim.sim.time
    wait_for(lambda: sim.lockstep_waits > 0, 10.0, "the simulator to wait")
    assert sim.sim.time <= held_at + 0.1 + 1e-9  # at most the step under way
    sim.release("person")
    wait_for(lambda: sim.sim.time >= held_at + 1.0, 10.0, "the clock to go on")


def test_start_paused_runs_on_request_and_drives_clocks_in_process(
    ros_executor: SpinningExecutor,
) -> None:
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from std_srvs.srv import SetBool

    sim = start_sim(ros_executor, start_paused=True, real_time_factor=0.0)
    listener = ros_executor.add(Node("clock_listener", context=ros_executor.context,
                                     parameter_overrides=[Parameter("use_sim_time", value=True)]))
    sim.drive_clock(listener)
    probe = Probe(ros_executor)
    wait_for(lambda: len(probe.clock) >= 1, 10.0, "/clock while paused")
    assert sim.steps == 0
    assert sim.sim.time == 0.0
    assert probe.call(SetBool, "/sim/run", SetBool.Request(data=True)).success
    wait_for(lambda: sim.sim.time > 2.0, 10.0, "the clock to run")
    # The listener's clock is the simulator's, without a /clock subscription of its own.
    assert listener.count_subscribers("/clock") >= 1
    assert not any(s.topic_name == "/clock" for s in listener.subscriptions)
    now = listener.get_clock().now().nanoseconds * 1e-9
    assert 2.0 < now <= sim.sim.time + 1e-6
    sim.pause()
    paused_at = sim.sim.time
    probe.wait_sim(0.0)
    wait_for(lambda: len(probe.clock) >= 3, 10.0, "/clock repeated while paused")
    assert sim.sim.time <= paused_at + 0.05 + 1e-9
    with pytest.raises(ValueError, match="use_sim_time"):
        sim.drive_clock(probe.node)


def test_refuses_a_lead_shorter_than_a_step_and_unknown_lockstep_robots(
    ros_executor: SpinningExecutor,
) -> None:
    with pytest.raises(ValueError, match="lockstep_lead_s"):
        start_sim(ros_executor, lockstep=True, lockstep_lead_s=0.01)
    with pytest.raises(ValueError, match="not in robot_ids"):
        start_sim(ros_executor, lockstep=True, lockstep_robots=["robot9"])
