"""The simulator core on a hand-made walled yard (and once on the town world).

The yard (metres):      y
                       10 +---------------------------------------------+
                          |                                             |
                          |   charger (2, 2)                o post      |
                          |                                  (15, 5)    |
                        0 +---------------------------------------------+ x 20
Walls are 0.2 m thick boxes outside the 20 x 10 interior; the post is a 0.2 m circle.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from shapely.geometry import Point, Polygon

from delivery_robot.fleet_simulation import (
    BatteryConfig,
    EventKind,
    FleetSimulation,
    KinematicsConfig,
    LidarConfig,
    LockState,
    Occupancy,
    OdometryConfig,
    PedestrianConfig,
    SimConfig,
    SimWorld,
    spawn_poses,
)
from delivery_robot.route_graph import SignalCycle, load_route_graph
from delivery_robot.world_geometry import BoxFootprint, CircleFootprint, WorldGeometry

ROOT = Path(__file__).resolve().parents[1]
DT = 0.05
EXACT_ODOM = OdometryConfig(wheel_noise=0.0, left_scale_error=0.0, right_scale_error=0.0,
                            wheel_base_error=0.0)
QUIET = SimConfig(odometry=EXACT_ODOM, lidar=LidarConfig(noise_std=0.0))
K = KinematicsConfig()
Array = npt.NDArray[np.float64]


def yard(walk_paths: tuple[tuple[tuple[float, float], ...], ...] = ()) -> SimWorld:
    walls = (
        BoxFootprint("wall_s", 10.0, -0.1, 0.0, 20.4, 0.2, 0.0, 2.0),
        BoxFootprint("wall_n", 10.0, 10.1, 0.0, 20.4, 0.2, 0.0, 2.0),
        BoxFootprint("wall_w", -0.1, 5.0, 0.0, 0.2, 10.4, 0.0, 2.0),
        BoxFootprint("wall_e", 20.1, 5.0, 0.0, 0.2, 10.4, 0.0, 2.0),
    )
    post = (CircleFootprint("post", 15.0, 5.0, 0.2, 0.0, 1.5),)
    return SimWorld(
        geometry=WorldGeometry("yard", walls, post),
        chargers=((2.0, 2.0),),
        crossings=(("crossing", SignalCycle(25.0, 35.0, 5.0)), ("zebra", None)),
        walk_area=Polygon([(0, 0), (20, 0), (20, 10), (0, 10)]),
        walk_paths=walk_paths,
    )


def drive(sim: FleetSimulation, seconds: float, linear: float, angular: float = 0.0,
          robot: int = 0) -> list[Array]:
    """Command (linear, angular) every step for `seconds`; returns the twists after each."""
    twists = []
    for _ in range(round(seconds / DT)):
        sim.set_command(robot, linear, angular)
        sim.step(DT)
        twists.append(sim.twists[robot].copy())
    return twists


def beam(sim: FleetSimulation, angle: float) -> int:
    pattern = sim.config.lidar.pattern
    return round((angle - pattern.angle_min) / pattern.angle_increment) % pattern.count


def odom_in_map(sim: FleetSimulation, robot: int) -> tuple[float, float, float]:
    o = sim.map_pose_of_odom(robot)
    x, y, yaw = sim.odom_poses[robot]
    c, s = math.cos(o.yaw), math.sin(o.yaw)
    return o.x + c * x - s * y, o.y + s * x + c * y, o.yaw + yaw


def angle_diff(a: float, b: float) -> float:
    return (a - b + math.pi) % (2 * math.pi) - math.pi


# -- kinematics ------------------------------------------------------------------------------
def test_speed_and_acceleration_limits() -> None:
    sim = FleetSimulation(yard(), [(3.0, 5.0, 0.0)], QUIET)
    speeds = [0.0] + [float(t[0]) for t in drive(sim, 3.0, linear=5.0)]
    dv = np.diff(speeds)
    assert dv.max() <= K.accel_limit * DT + 1e-12
    assert speeds[-1] == pytest.approx(K.max_speed)  # clipped to the top speed
    assert speeds[round(K.max_speed / (K.accel_limit * DT)) - 1] < K.max_speed
    slowing = [speeds[-1]] + [float(t[0]) for t in drive(sim, 2.0, linear=0.0)]
    assert np.diff(slowing)[:5] == pytest.approx(-K.decel_limit * DT)
    assert slowing[-1] == 0.0
    turns = [0.0] + [float(t[1]) for t in drive(sim, 2.0, linear=0.0, angular=-9.0)]
    assert np.abs(np.diff(turns)).max() <= K.yaw_accel_limit * DT + 1e-12
    assert turns[-1] == pytest.approx(-K.max_yaw_rate)
    backwards = drive(sim, 2.0, linear=-3.0)
    assert backwards[-1][0] == pytest.approx(-K.max_reverse_speed)


def test_straight_and_arc_motion_is_where_geometry_says() -> None:
    sim = FleetSimulation(yard(), [(3.0, 5.0, math.pi / 2)], QUIET)
    drive(sim, 4.0, linear=0.5)
    x, y, yaw = sim.poses[0]
    assert x == pytest.approx(3.0, abs=1e-12)
    assert y == pytest.approx(5.0 + sim.distances[0], abs=1e-12)
    assert yaw == pytest.approx(math.pi / 2)
    arc = FleetSimulation(yard(), [(10.0, 2.0, 0.0)], QUIET)
    drive(arc, 0.5, linear=0.5, angular=0.25)  # spin up, then a full turn of radius 2 m
    x, y, yaw = arc.poses[0]
    centre = (x - 2.0 * math.sin(yaw), y + 2.0 * math.cos(yaw))
    radii = []
    for _ in range(510):  # 25.5 s at 0.25 rad/s: just over a full turn
        arc.set_command(0, 0.5, 0.25)
        arc.step(DT)
        radii.append(math.hypot(arc.poses[0, 0] - centre[0], arc.poses[0, 1] - centre[1]))
    assert radii == pytest.approx([2.0] * len(radii), abs=1e-4)
    assert angle_diff(arc.poses[0, 2], yaw) == pytest.approx(0.25 * 25.5 - 2 * math.pi)


def test_robot_stops_at_a_wall_and_never_enters_it() -> None:
    sim = FleetSimulation(yard(), [(17.0, 5.0, 0.0)], QUIET)
    xs = []
    for _ in range(80):  # 4 s at up to 2 m/s: far more than the 2.65 m to the wall
        sim.set_command(0, 2.0, 0.0)
        sim.step(DT)
        xs.append(float(sim.poses[0, 0]))
    limit = 20.0 - K.radius
    assert max(xs) <= limit + 1e-9
    assert xs[-1] == pytest.approx(limit, abs=2e-3)  # touching, not stuck a step short
    assert sim.twists[0, 0] == 0.0
    assert sim.collision_counts[:, 0].tolist() == [1, 0, 0]  # one contact, however long
    kinds = [e.kind for e in sim.drain_events()]
    assert kinds == [EventKind.COLLISION_STATIC]
    drive(sim, 1.0, linear=-0.3)  # backing off is allowed
    assert sim.poses[0, 0] < limit - 0.1


def test_a_long_step_is_split_so_nothing_tunnels() -> None:
    no_watchdog = replace(QUIET, kinematics=replace(K, command_timeout_s=None))
    sim = FleetSimulation(yard(), [(18.0, 5.0, 0.0)], no_watchdog)
    sim.set_command(0, 2.0, 0.0)
    sim.step(5.0)  # one call: 100 substeps of 50 ms
    assert sim.time == pytest.approx(5.0)
    assert sim.poses[0, 0] == pytest.approx(20.0 - K.radius, abs=2e-3)


def test_robots_block_each_other_head_on() -> None:
    sim = FleetSimulation(yard(), [(6.0, 5.0, 0.0), (10.0, 5.0, math.pi)], QUIET)
    gaps = []
    for _ in range(100):
        sim.set_commands(np.array([1.0, 1.0]), np.zeros(2))
        sim.step(DT)
        gaps.append(float(np.hypot(*(sim.poses[0, :2] - sim.poses[1, :2]))))
    assert min(gaps) >= 2 * K.radius - 1e-9
    assert gaps[-1] < 2 * K.radius + 0.2
    assert sim.collision_counts[1].tolist() == [1, 1]


def test_spawning_in_a_wall_or_on_another_robot_is_refused() -> None:
    with pytest.raises(ValueError, match="static obstacle"):
        FleetSimulation(yard(), [(0.2, 5.0, 0.0)], QUIET)
    with pytest.raises(ValueError, match="overlapping"):
        FleetSimulation(yard(), [(5.0, 5.0, 0.0), (5.5, 5.0, 0.0)], QUIET)


def test_command_timeout_stops_a_robot_whose_commands_stop() -> None:
    sim = FleetSimulation(yard(), [(3.0, 5.0, 0.0)], QUIET)
    sim.set_command(0, 1.0, 0.0)
    speeds = []
    for _ in range(60):
        sim.step(DT)
        speeds.append(float(sim.twists[0, 0]))
    assert max(speeds) == pytest.approx(K.accel_limit * 0.5, abs=0.06)  # ramped for 0.5 s
    assert speeds[-1] == 0.0


# -- e-stop ------------------------------------------------------------------------------------
def test_estop_brakes_at_max_deceleration_and_ignores_commands() -> None:
    sim = FleetSimulation(yard(), [(2.0, 5.0, 0.0)], QUIET)
    drive(sim, 2.0, linear=1.5)
    assert sim.twists[0, 0] == pytest.approx(1.5)
    sim.set_estop(0, True)
    speeds = [1.5] + [float(t[0]) for t in drive(sim, 1.0, linear=1.5)]
    assert np.diff(speeds)[:9] == pytest.approx(-K.estop_decel * DT)
    assert K.estop_decel > K.decel_limit
    assert speeds[-1] == 0.0
    assert sim.output(0).estop
    assert sim.estops.tolist() == [True]
    sim.set_estop(0, False)
    assert drive(sim, 0.5, linear=1.5)[-1][0] > 0.0
    kinds = [e.kind for e in sim.drain_events()]
    assert kinds == [EventKind.ESTOP_PRESSED, EventKind.ESTOP_RELEASED]


# -- odometry ----------------------------------------------------------------------------------
def drive_a_course(sim: FleetSimulation) -> None:
    drive(sim, 3.0, linear=1.0, angular=0.3)
    drive(sim, 2.0, linear=1.0)
    drive(sim, 3.0, linear=0.5, angular=-0.4)


def test_odometry_matches_ground_truth_without_noise() -> None:
    sim = FleetSimulation(yard(), [(4.0, 3.0, 0.4)], QUIET)
    drive_a_course(sim)
    x, y, yaw = odom_in_map(sim, 0)
    assert sim.distances[0] > 5.0
    assert x == pytest.approx(sim.poses[0, 0], abs=1e-9)
    assert y == pytest.approx(sim.poses[0, 1], abs=1e-9)
    assert angle_diff(yaw, sim.poses[0, 2]) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(sim.odom_twists, sim.twists, atol=1e-9)
    assert sim.output(0).odom_pose.x == pytest.approx(sim.odom_poses[0, 0])


def test_odometry_drifts_with_noise_and_only_while_moving() -> None:
    sim = FleetSimulation(yard(), [(4.0, 3.0, 0.4)], SimConfig(odometry=OdometryConfig()))
    before = sim.odom_poses.copy()
    sim.step(2.0)  # standing still: wheels do not turn, odometry does not move
    assert np.array_equal(sim.odom_poses, before)
    drive_a_course(sim)
    x, y, yaw = odom_in_map(sim, 0)
    error = math.hypot(x - sim.poses[0, 0], y - sim.poses[0, 1])
    assert 0.01 < error < 1.0  # drifted, but still odometry
    assert abs(angle_diff(yaw, sim.poses[0, 2])) > 1e-4


def test_odometry_frame_starts_at_the_start_pose() -> None:
    sim = FleetSimulation(yard(), [(4.0, 3.0, 0.4)], QUIET)
    assert sim.odom_poses.tolist() == [[0.0, 0.0, 0.0]]
    origin = sim.map_pose_of_odom(0)
    assert (origin.x, origin.y, origin.yaw) == pytest.approx((4.0, 3.0, 0.4))


# -- lidar -------------------------------------------------------------------------------------
def test_lidar_sees_another_robot_and_a_pedestrian() -> None:
    lone = ((5.0, 8.0), (5.0, 8.0))  # a pedestrian path that keeps them standing at (5, 8)
    config = replace(QUIET, pedestrians=PedestrianConfig(count=1))
    sim = FleetSimulation(yard(walk_paths=(lone,)), [(5.0, 5.0, 0.0), (9.0, 5.0, math.pi)],
                          config)
    assert sim.pedestrians.positions.tolist() == [[5.0, 8.0]]
    scans = sim.scans  # taken at construction, t = 0
    # robot 0's lidar at (5.15, 5) sees robot 1's body edge at x = 8.65, and back
    assert scans[0, beam(sim, 0.0)] == pytest.approx(8.65 - 5.15, abs=1e-9)
    assert scans[1, beam(sim, 0.0)] == pytest.approx(8.85 - 5.35, abs=1e-9)
    towards = math.atan2(3.0, -0.15)
    near = [beam(sim, towards + math.radians(d)) for d in range(-3, 4)]
    assert scans[0, near].min() == pytest.approx(math.hypot(0.15, 3.0) - 0.3, abs=2e-3)
    empty = FleetSimulation(yard(), [(5.0, 5.0, 0.0)], QUIET)
    assert empty.scans[0, near].min() > 4.5  # the north wall, not a person
    assert math.isfinite(empty.scans[0, beam(sim, 0.0)])  # the post at (15, 5) behind x = 9


def test_scan_uses_rep117_below_min_and_beyond_max() -> None:
    lidar = LidarConfig(noise_std=0.0, range_min=0.5, range_max=4.0)
    sim = FleetSimulation(yard(), [(0.6, 5.0, math.pi)], replace(QUIET, lidar=lidar))
    scan = sim.scan(0)
    assert scan.ranges[beam(sim, 0.0)] == -math.inf  # west wall 0.45 m from the lidar
    assert scan.ranges[beam(sim, math.pi)] == math.inf  # east wall 19 m away
    assert scan.range_min == 0.5
    assert scan.range_max == 4.0
    assert scan.angle_increment == pytest.approx(2 * math.pi / 360)
    assert not scan.ranges.flags.writeable


def test_scans_come_at_the_lidar_rate() -> None:
    sim = FleetSimulation(yard(), [(5.0, 5.0, 0.0)], QUIET)
    stamps = []
    for _ in range(20):
        sim.step(DT)
        stamps.append(sim.scan_stamp)
    assert sim.scan_count == 11  # one at t = 0, then every 0.1 s
    assert sorted(set(stamps)) == pytest.approx([0.1 * i for i in range(11)])


def test_lidar_noise_is_gaussian_sized() -> None:
    sim = FleetSimulation(yard(), [(5.0, 5.0, 0.0)], replace(QUIET, lidar=LidarConfig()))
    exact = FleetSimulation(yard(), [(5.0, 5.0, 0.0)], QUIET)
    finite = np.isfinite(exact.scans[0]) & np.isfinite(sim.scans[0])
    assert finite.sum() > 300
    error = sim.scans[0, finite] - exact.scans[0, finite]
    assert 0.005 < float(np.std(error)) < 0.02


# -- battery -----------------------------------------------------------------------------------
def test_battery_drains_by_distance_and_time() -> None:
    battery = BatteryConfig(drain_per_m=0.001, drain_per_s=0.0001)
    sim = FleetSimulation(yard(), [(8.0, 5.0, 0.0)], replace(QUIET, battery=battery))
    drive(sim, 4.0, linear=1.0, angular=0.2)
    sim.step(1.0)
    expected = 1.0 - 0.001 * sim.distances[0] - 0.0001 * sim.time
    assert sim.battery_levels[0] == pytest.approx(expected, abs=1e-9)
    assert sim.distances[0] > 2.0
    reading = sim.output(0).battery
    assert reading.percentage == pytest.approx(expected)
    assert not reading.charging
    assert battery.empty_voltage < reading.voltage < battery.full_voltage


def test_battery_charges_only_when_stopped_at_a_charger() -> None:
    battery = BatteryConfig(initial=0.5, charge_per_s=0.001, drain_per_s=0.0001)
    sim = FleetSimulation(yard(), [(2.2, 2.0, 0.0)], replace(QUIET, battery=battery))
    sim.step(10.0)
    assert sim.battery_levels[0] == pytest.approx(0.51, abs=1e-9)
    assert sim.output(0).battery.charging
    drive(sim, 2.0, linear=1.0)
    assert not sim.charging[0]
    assert sim.battery_levels[0] < 0.51
    full = FleetSimulation(yard(), [(2.0, 2.0, 0.0)],
                           replace(QUIET, battery=replace(battery, initial=0.999)))
    full.step(5.0)
    assert full.battery_levels[0] == 1.0


def test_empty_battery_cuts_the_motors() -> None:
    battery = BatteryConfig(initial=0.001, drain_per_s=0.002)
    sim = FleetSimulation(yard(), [(8.0, 5.0, 0.0)], replace(QUIET, battery=battery))
    drive(sim, 3.0, linear=1.0)
    assert sim.battery_levels[0] == 0.0
    assert sim.twists[0, 0] == 0.0
    assert EventKind.BATTERY_EMPTY in [e.kind for e in sim.drain_events()]


# -- compartment -------------------------------------------------------------------------------
def test_compartment_lock_door_and_occupancy_rules() -> None:
    sim = FleetSimulation(yard(), [(5.0, 5.0, 0.0)], QUIET)
    state = sim.compartment(0)
    assert (state.lock_state, state.door_closed, state.occupancy) == (
        LockState.LOCKED, True, Occupancy.EMPTY)
    assert not sim.open_door(0)  # locked: a person cannot open it
    assert not sim.load(0)  # closed: nothing goes in
    assert sim.set_lock(0, False)
    assert sim.open_door(0)
    assert sim.load(0)
    assert sim.compartment(0).occupancy is Occupancy.OCCUPIED
    assert not sim.set_lock(0, True)  # the bolt cannot lock an open door
    assert sim.compartment(0).lock_state is LockState.UNLOCKED
    sim.close_door(0)
    assert sim.set_lock(0, True)
    assert sim.output(0).compartment.lock_state is LockState.LOCKED
    kinds = [e.kind for e in sim.drain_events()]
    assert kinds == [EventKind.UNLOCKED, EventKind.DOOR_OPENED, EventKind.LOADED,
                     EventKind.LOCK_REFUSED, EventKind.DOOR_CLOSED, EventKind.LOCKED]


def test_stuck_lock_reports_fault_until_a_command_succeeds() -> None:
    sim = FleetSimulation(yard(), [(5.0, 5.0, 0.0)], QUIET)
    sim.set_stuck_lock(0, True)
    assert not sim.set_lock(0, False)
    state = sim.compartment(0)
    assert state.lock_state is LockState.FAULT
    assert state.stuck_lock
    assert not sim.open_door(0)  # the jammed bolt is still engaged
    sim.set_stuck_lock(0, False)
    assert sim.compartment(0).lock_state is LockState.FAULT  # until a command succeeds
    assert sim.set_lock(0, False)
    assert sim.open_door(0)
    assert sim.unload(0)
    assert sim.compartment(0).occupancy is Occupancy.EMPTY


def test_compartment_enums_match_the_message_constants() -> None:
    msg = pytest.importorskip("delivery_interfaces.msg")
    for state in LockState:
        assert getattr(msg.CompartmentState, f"LOCK_{state.name}") == state.value
    for occupancy in Occupancy:
        assert getattr(msg.CompartmentState, f"OCCUPANCY_{occupancy.name}") == occupancy.value


# -- crossing signals --------------------------------------------------------------------------
def test_crossing_signal_follows_the_route_graph_cycle() -> None:
    cycle = SignalCycle(25.0, 35.0, 5.0)
    sim = FleetSimulation(yard(), [(5.0, 5.0, 0.0)], QUIET)
    seen = []
    for _ in range(130):
        signals = sim.crossing_signals()
        assert [s.zone for s in signals] == ["crossing"]  # the unsignalled zebra has none
        t = sim.time
        seen.append(signals[0].green)
        assert signals[0].green == cycle.is_green(t)
        if not signals[0].green:
            assert signals[0].seconds_to_change == pytest.approx(
                cycle.seconds_until_green(t), abs=1e-9)
        sim.step(0.5)
    # every 0.5 s: red until 5 s, green 5..30 s, red 30..65 s, green again from 65 s
    assert (seen[0], seen[9], seen[10], seen[59], seen[60], seen[129]) == (
        False, False, True, True, False, False)
    assert sim.time == pytest.approx(65.0)
    green = sim.crossing_signals()[0]
    assert green.green
    assert green.seconds_to_change == pytest.approx(25.0)


# -- determinism -------------------------------------------------------------------------------
def run_scenario(seed: int, lidar: bool = True) -> FleetSimulation:
    """Three noisy robots, four pedestrians, a random but fixed command sequence."""
    config = SimConfig(lidar=LidarConfig(enabled=lidar), pedestrians=PedestrianConfig(count=4))
    sim = FleetSimulation(yard(), [(3.0, 3.0, 0.0), (3.0, 7.0, 0.0), (10.0, 5.0, 1.0)],
                          config, seed=seed)
    commands = np.random.default_rng(0).uniform((-0.2, -1.0), (1.5, 1.0), (100, 3, 2))
    for step, command in enumerate(commands):
        sim.set_commands(command[:, 0], command[:, 1])
        if step == 50:
            sim.set_estop(2, True)
            sim.set_lock(1, False)
            sim.open_door(1)
        sim.step(DT)
    return sim


def test_same_seed_and_commands_give_identical_state() -> None:
    a, b = run_scenario(42).state_arrays(), run_scenario(42).state_arrays()
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    other = run_scenario(43).state_arrays()
    assert not np.array_equal(a["odom_pose"], other["odom_pose"])
    assert not np.array_equal(a["pedestrians"], other["pedestrians"])


def test_switching_the_lidar_off_does_not_change_trajectories() -> None:
    on, off = run_scenario(42).state_arrays(), run_scenario(42, lidar=False).state_arrays()
    for key in ("pose", "odom_pose", "pedestrians", "battery", "collisions"):
        assert np.array_equal(on[key], off[key]), key
    assert np.isfinite(on["scan"]).any()
    assert np.isinf(off["scan"]).all()


# -- a real world ------------------------------------------------------------------------------
def test_town_world_from_its_route_graph() -> None:
    route = load_route_graph(ROOT / "config" / "worlds" / "town.yaml")
    world = SimWorld.from_route_graph(route)
    assert len(world.chargers) == 2
    assert ("main_street_crosswalk", route.zones_of_kind("crosswalk")[0].signal) in \
        world.crossings
    depot = route.waypoint("depot")
    spawns = [(depot.x - 1.0, depot.y, 0.0), (depot.x + 1.0, depot.y, 0.0)]
    sim = FleetSimulation(world, spawns, SimConfig(pedestrians=PedestrianConfig(count=5)))
    drive(sim, 1.0, linear=0.3)
    assert sim.pedestrians.count == 5
    for x, y in sim.pedestrians.positions:
        assert route.geofence.covers(Point(x, y))
    assert np.isfinite(sim.scans).sum() > 500  # the garage walls around the depot
    assert sim.collision_counts.sum() == 0


# -- where robots start ------------------------------------------------------------------------
@pytest.mark.parametrize("world_name", ["town", "apartment"])
def test_spawn_poses_chargers_first_then_parking_spots_off_the_lanes(world_name: str) -> None:
    route = load_route_graph(ROOT / "config" / "worlds" / f"{world_name}.yaml")
    world = SimWorld.from_route_graph(route)
    poses = spawn_poses(route, world, 8)
    assert poses == spawn_poses(route, world, 8)  # deterministic
    assert len(poses) == 8
    chargers = [(w.x, w.y) for w in route.chargers]
    assert [(x, y) for x, y, _ in poses[:len(chargers)]] == chargers
    depot = route.depots[0]
    points = np.array([complex(x, y) for x, y, _ in poses])
    gaps = np.abs(points[:, None] - points[None, :]) + np.eye(len(points)) * 1e9
    assert gaps.min() >= 2.0 - 1e-9
    assert np.abs(points - complex(depot.x, depot.y)).min() >= 2.0 - 1e-9
    for x, y, _ in poses[len(chargers):]:
        off_lane = min(Point(x, y).distance(_lane(route, lane)) for lane in route.lanes)
        assert 2.5 - 1e-9 <= off_lane <= 4.0 + 1e-9
        assert route.geofence.covers(Point(x, y))
    FleetSimulation(world, poses)  # refuses spawns in a wall or on another robot


def test_spawn_poses_say_when_the_depot_is_full() -> None:
    route = load_route_graph(ROOT / "config" / "worlds" / "apartment.yaml")
    with pytest.raises(ValueError, match="room to park only"):
        spawn_poses(route, SimWorld.from_route_graph(route), 60)


def _lane(route: object, lane: object) -> object:
    from shapely.geometry import LineString

    a, b = route.waypoint(lane.start), route.waypoint(lane.end)  # type: ignore[attr-defined]
    return LineString([(a.x, a.y), (b.x, b.y)])


def test_ghost_robots_pass_through_and_do_not_see_each_other() -> None:
    spawns = [(3.0, 5.0, 0.0), (6.0, 5.0, math.pi)]  # head-on, 3 m apart
    real = FleetSimulation(yard(), spawns, QUIET)
    ghost = FleetSimulation(yard(), spawns, replace(QUIET, ghost_robots=True))
    ahead = beam(real, 0.0)
    assert real.scans[0][ahead] == pytest.approx(3.0 - 0.15 - K.radius, abs=0.01)
    assert ghost.scans[0][ahead] > 3.0  # the other robot is not seen
    for sim in (real, ghost):
        drive(sim, 6.0, linear=0.8)
    assert real.poses[0, 0] == pytest.approx(6.0 - 2 * K.radius, abs=0.05)  # stopped at it
    assert real.collision_counts[1].sum() > 0
    assert ghost.poses[0, 0] > 7.0  # straight through
    assert ghost.collision_counts.sum() == 0
