"""The handoff node: the compartment rules through real rclpy topics and services.

A fake base serves `compartment/set_lock` and publishes `compartment/state`, moving its bolt on
lock commands and its door and occupancy when a test says so; a fake mission executor publishes
`robot_state` (waypoint, mode, order). Credentials are issued by a coordinator-side book with the
same secret and a cheap PIN hash, so wrong-PIN series stay fast.
"""

from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from builtin_interfaces.msg import Time
from ros_harness import SpinningExecutor, wait_for

from delivery_robot.credentials import ScryptParams
from delivery_robot.handoff_credentials import (
    CredentialPolicy,
    HandoffCredentials,
    IssuedCredentials,
    StoredCredentials,
)

pytestmark = pytest.mark.ros

SECRET = "test-handoff-secret-0123456789abcdef"
SHOP = "shop_bakery"
DROPOFF = "dropoff_3"
ORDER = "order-42"
LOCK_UNKNOWN, LOCK_LOCKED, LOCK_UNLOCKED = 0, 1, 2
EMPTY, OCCUPIED = 1, 2
LOCKED_EMPTY, OPEN_FOR_LOADING, LOCKED_LOADED, OPEN_FOR_RECIPIENT, DOOR_OPEN, FAULT = range(6)
MODE_TO_PICKUP, MODE_AWAITING_LOAD, MODE_TO_DROPOFF, MODE_AWAITING_RECIPIENT = 1, 2, 3, 4
PIN, QR = 0, 1


class FakeBase:
    """Base driver stand-in: a bolt that follows lock commands (never into an open door)."""

    def __init__(self, ros_executor: SpinningExecutor) -> None:
        from delivery_interfaces.msg import CompartmentState
        from delivery_interfaces.srv import SetLock

        from delivery_robot.ros.qos import STATE_QOS

        self.node = ros_executor.node("fake_base")
        self._mutex = threading.Lock()
        self.lock_state = LOCK_LOCKED
        self.door_closed = True
        self.occupancy = EMPTY
        self.stuck = False
        self.requests: list[tuple[bool, str]] = []
        self.publisher = self.node.create_publisher(CompartmentState, "compartment/state",
                                                    STATE_QOS)
        self.node.create_service(SetLock, "compartment/set_lock", self._on_set_lock)
        self.publish()

    def _on_set_lock(self, request: Any, response: Any) -> Any:
        with self._mutex:
            self.requests.append((bool(request.lock), str(request.requested_by)))
            if request.lock and not self.door_closed:
                response.success, response.message = False, "door open"
            elif self.stuck:
                response.success, response.message = True, "queued"
            else:
                self.lock_state = LOCK_LOCKED if request.lock else LOCK_UNLOCKED
                response.success, response.message = True, "ok"
        response.state = self.publish()
        return response

    def publish(self) -> Any:
        from delivery_interfaces.msg import CompartmentState

        with self._mutex:
            message = CompartmentState(lock_state=self.lock_state, door_closed=self.door_closed,
                                       occupancy=self.occupancy)
        message.header.frame_id = "compartment"
        message.header.stamp = self.node.get_clock().now().to_msg()
        self.publisher.publish(message)
        return message

    def set(self, *, door_closed: bool | None = None, occupancy: int | None = None) -> None:
        """A person at the door (or perception) changes something; published at once.

        compartment/state keeps only the newest sample on the writer, so tests wait for the
        handoff node to show a change before making the next one."""
        with self._mutex:
            if door_closed is not None:
                self.door_closed = door_closed
            if occupancy is not None:
                self.occupancy = occupancy
        self.publish()

    def commands(self) -> list[bool]:
        return [lock for lock, _ in self.requests]


class FakeRobot:
    """Mission executor stand-in publishing robot_state."""

    def __init__(self, ros_executor: SpinningExecutor) -> None:
        from delivery_interfaces.msg import RobotState

        from delivery_robot.ros.qos import STATE_QOS

        self.node = ros_executor.node("fake_robot")
        self.publisher = self.node.create_publisher(RobotState, "robot_state", STATE_QOS)

    def report(self, mode: int, waypoint: str, order_ids: list[str] | None = None) -> None:
        from delivery_interfaces.msg import RobotState

        self.publisher.publish(RobotState(robot_id="robot1", mode=mode,
                                          current_waypoint=waypoint,
                                          order_ids=[ORDER] if order_ids is None else order_ids))


class Watcher:
    """Records handoff/state and handoff/events and calls the node's services."""

    def __init__(self, ros_executor: SpinningExecutor) -> None:
        from delivery_interfaces.msg import CompartmentState
        from std_msgs.msg import String

        from delivery_robot.ros.qos import EVENT_QOS, STATE_QOS

        self.node = ros_executor.node("watcher")
        self.state: Any = None
        self.events: list[dict[str, Any]] = []
        self.node.create_subscription(CompartmentState, "handoff/state", self._on_state,
                                      STATE_QOS)
        self.node.create_subscription(String, "handoff/events", self._on_event, EVENT_QOS)

    def _on_state(self, message: Any) -> None:
        self.state = message

    def _on_event(self, message: Any) -> None:
        self.events.append(json.loads(message.data))

    def kinds(self) -> list[str]:
        return [event["kind"] for event in self.events]

    def wait_state(self, handoff_state: int, what: str = "") -> None:
        wait_for(lambda: self.state is not None and self.state.handoff_state == handoff_state,
                 5.0, what or f"handoff_state {handoff_state}")

    def wait_event(self, kind: str) -> dict[str, Any]:
        wait_for(lambda: kind in self.kinds(), 5.0, f"event {kind}")
        return next(event for event in self.events if event["kind"] == kind)

    def call(self, service_type: Any, name: str, request: Any) -> Any:
        client = self.node.create_client(service_type, name)
        wait_for(client.service_is_ready, 10.0, f"service {name}")
        future = client.call_async(request)
        wait_for(future.done, 10.0, f"reply from {name}")
        return future.result()

    def open_for_loading(self) -> Any:
        from std_srvs.srv import Trigger

        return self.call(Trigger, "handoff/open_for_loading", Trigger.Request())

    def verify(self, credential: str, method: int = PIN, order_id: str = ORDER) -> Any:
        from delivery_interfaces.srv import VerifyHandoff

        return self.call(VerifyHandoff, "handoff/verify",
                         VerifyHandoff.Request(order_id=order_id, method=method,
                                               credential=credential))


class Rig:
    def __init__(self, ros_executor: SpinningExecutor, **overrides: Any) -> None:
        from rclpy.parameter import Parameter

        from delivery_robot.nodes.handoff import HandoffNode

        self.executor = ros_executor
        self.base = FakeBase(ros_executor)
        self.robot = FakeRobot(ros_executor)
        self.watch = Watcher(ros_executor)
        state_dir = Path(tempfile.mkdtemp(prefix="handoff_node_test_"))
        self.values = {"handoff_secret": SECRET, "tick_period_s": 0.05,
                       "occupancy_settle_s": 0.2,
                       "state_path": str(state_dir / "robot1_handoff.db"), **overrides}
        self._parameters = [Parameter(k, value=v) for k, v in self.values.items()]
        self._node_class = HandoffNode
        self.node = ros_executor.add(HandoffNode(context=ros_executor.context,
                                                 parameter_overrides=self._parameters))
        self._wait_started()

    def restart(self) -> None:
        """Stop the node (as a crash would, nothing said) and start a new one on its file."""
        self.executor.executor.remove_node(self.node)
        self.executor._nodes.remove(self.node)
        self.node.destroy_node()
        self.watch.state = None
        self.node = self.executor.add(self._node_class(context=self.executor.context,
                                                       parameter_overrides=self._parameters))
        self._wait_started()

    def _wait_started(self) -> None:
        wait_for(lambda: self.node.lock_client.service_is_ready(), 10.0, "compartment/set_lock")
        # The start-up lock the core sends for a closed door, confirmed by the base.
        wait_for(lambda: self.watch.state is not None
                 and self.watch.state.lock_state == LOCK_LOCKED
                 and self.watch.state.door_closed, 5.0, "handoff to see the locked compartment")

    def load(self) -> None:
        """At the shop: open for loading, the shop puts the goods in and closes the door."""
        self.robot.report(MODE_AWAITING_LOAD, SHOP)
        wait_for(lambda: self.watch.state.order_id == ORDER, 5.0, "order from robot_state")
        reply = self.watch.open_for_loading()
        assert reply.success, reply.message
        self.watch.wait_state(OPEN_FOR_LOADING)
        wait_for(lambda: self.base.lock_state == LOCK_UNLOCKED, 5.0, "unlock for loading")
        self.set_and_wait(door_closed=False)
        self.set_and_wait(occupancy=OCCUPIED)
        self.set_and_wait(door_closed=True)
        wait_for(lambda: self.base.lock_state == LOCK_LOCKED, 5.0, "lock after loading")
        self.watch.wait_state(LOCKED_LOADED, "locked_loaded after loading")
        self.watch.wait_event("loaded")

    def set_and_wait(self, *, door_closed: bool | None = None,
                     occupancy: int | None = None) -> None:
        self.base.set(door_closed=door_closed, occupancy=occupancy)
        wait_for(lambda: (door_closed is None or self.watch.state.door_closed == door_closed)
                 and (occupancy is None or self.watch.state.occupancy == occupancy), 5.0,
                 f"handoff to see door_closed={door_closed} occupancy={occupancy}")

    def drive_to_dropoff(self) -> None:
        self.robot.report(MODE_TO_DROPOFF, "")
        self.robot.report(MODE_AWAITING_RECIPIENT, DROPOFF)


def issue_records(now: float) -> tuple[IssuedCredentials, list[StoredCredentials]]:
    book = HandoffCredentials(CredentialPolicy(secret_key=SECRET.encode(),
                                               pin_hash_cost=ScryptParams(log2_n=4)))
    issued = book.issue(ORDER, now)
    return issued, book.records()


def wall_now(rig: Rig) -> float:
    return float(rig.node.get_clock().now().nanoseconds * 1e-9)


# ---- tests -----------------------------------------------------------------------------------


def test_load_at_the_shop_then_deliver_with_a_pin(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor)
    issued, records = issue_records(wall_now(rig))
    rig.node.load_credentials(records)
    rig.load()
    rig.drive_to_dropoff()
    wait_for(lambda: rig.node.core.order is not None
             and rig.node.core.order.dropoff_waypoint == DROPOFF, 5.0, "dropoff from robot_state")

    wrong = rig.watch.verify("000000" if issued.pin != "000000" else "111111")
    assert (wrong.granted, wrong.error_code, wrong.attempts_left) == (False, "wrong_credential", 4)
    good = rig.watch.verify(issued.pin)
    assert good.granted, good.message
    rig.watch.wait_state(OPEN_FOR_RECIPIENT)
    wait_for(lambda: rig.base.lock_state == LOCK_UNLOCKED, 5.0, "unlock for the recipient")

    rig.set_and_wait(door_closed=False)
    rig.watch.wait_state(DOOR_OPEN)
    rig.set_and_wait(occupancy=EMPTY)  # perception sees the goods gone while the door is open
    rig.set_and_wait(door_closed=True)  # unchanged "empty" becomes the verdict after settling
    delivered = rig.watch.wait_event("delivered")
    rig.watch.wait_state(LOCKED_EMPTY, "locked_empty after delivery")
    assert delivered["order_id"] == ORDER
    assert delivered["proof"]["waypoint"] == DROPOFF
    assert delivered["proof"]["photo_ref"].startswith("compartment@")
    wait_for(lambda: rig.base.lock_state == LOCK_LOCKED, 5.0, "lock after the handoff")
    # start-up lock, unlock for loading, lock on close, unlock for the recipient, lock on close
    assert rig.base.commands() == [True, False, True, False, True]
    assert all(who.startswith("handoff: ") for _, who in rig.base.requests)
    # A used PIN does not open the compartment again.
    again = rig.watch.verify(issued.pin)
    assert not again.granted
    assert {"lock_command", "door_opened", "door_closed", "recipient_unlocked"} <= set(
        rig.watch.kinds())


def test_assign_service_sets_the_waypoints_and_loads_the_record(
        ros_executor: SpinningExecutor) -> None:
    """handoff/assign (the executor's call): the record makes the PIN verify on the robot; the
    dropoff is the assigned one even though robot_state never reported a waypoint for it."""
    from delivery_interfaces.srv import AssignHandoff

    from delivery_robot.handoff_record import record_to_json

    rig = Rig(ros_executor)
    issued, records = issue_records(wall_now(rig))

    def assign(order_id: str = ORDER, record: str = "") -> Any:
        return rig.watch.call(AssignHandoff, "handoff/assign", AssignHandoff.Request(
            order_id=order_id, shop_waypoint=SHOP, dropoff_waypoint=DROPOFF,
            credential_record=record))

    bad = assign(record='{"v": 1, "order_id": "x"}')
    assert (bad.accepted, bad.error_code) == (False, "bad_record")
    other = issue_records(wall_now(rig))[1][0]
    wrong_order = assign(record=record_to_json(replace(other, order_id="order-7")))
    assert (wrong_order.accepted, wrong_order.error_code) == (False, "bad_record")
    reply = assign(record=record_to_json(records[0]))
    assert reply.accepted, reply.message
    assert "credential record loaded" in reply.message
    assert assign().accepted  # asking again for the same order is fine
    wait_for(lambda: rig.watch.state.order_id == ORDER, 5.0, "handoff/state names the order")
    rig.load()
    assert not assign("order-99").accepted  # another order's goods are inside
    assert assign("order-99").error_code == "goods_on_board"
    rig.robot.report(MODE_AWAITING_RECIPIENT, DROPOFF)
    # A malformed credential costs no attempt: its refusal tells when the place is right.
    wait_for(lambda: rig.watch.verify("x").error_code == "malformed", 5.0,
             "robot at the dropoff")
    good = rig.watch.verify(issued.pin)
    assert good.granted, good.message
    rig.watch.wait_state(OPEN_FOR_RECIPIENT)


def test_loading_is_refused_away_from_the_shop(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor)
    rig.robot.report(MODE_TO_PICKUP, "junction_1")
    rig.node.assign_order(ORDER, SHOP, DROPOFF)  # the order's real waypoints
    reply = rig.watch.open_for_loading()
    assert not reply.success
    assert reply.message.startswith("not_at_shop")
    rig.robot.report(MODE_AWAITING_LOAD, SHOP)
    wait_for(lambda: rig.watch.open_for_loading().success, 5.0, "loading allowed at the shop")
    wait_for(lambda: rig.base.lock_state == LOCK_UNLOCKED, 5.0, "unlock for loading")


def test_credentials_are_refused_before_the_dropoff(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor)
    issued, records = issue_records(wall_now(rig))
    rig.node.load_credentials(records)
    rig.load()
    rig.robot.report(MODE_TO_DROPOFF, "junction_2")
    reply = rig.watch.verify(issued.pin)
    assert (reply.granted, reply.error_code) == (False, "not_at_dropoff")
    assert reply.attempts_left == 5  # not spent: the place was checked first
    assert rig.base.lock_state == LOCK_LOCKED


def test_signed_qr_opens_without_records_and_no_show_relocks(
        ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, recipient_open_timeout_s=0.5)
    issued, _ = issue_records(wall_now(rig))  # the robot is given no records
    rig.load()
    rig.drive_to_dropoff()
    wait_for(lambda: rig.node.core.order is not None
             and rig.node.core.order.dropoff_waypoint == DROPOFF, 5.0, "dropoff from robot_state")

    forged = issued.qr_token[:-2] + ("AA" if not issued.qr_token.endswith("AA") else "BB")
    assert rig.watch.verify(forged, QR).error_code == "unknown_order"
    assert rig.watch.verify(issued.pin).error_code == "unknown_order"  # PINs need the record
    good = rig.watch.verify(issued.qr_token, QR)
    assert good.granted, good.message
    wait_for(lambda: rig.base.lock_state == LOCK_UNLOCKED, 5.0, "unlock for the recipient")
    # Nobody opens the door: relocked, counted as a no-show, and the token works again.
    no_show = rig.watch.wait_event("no_show_relock")
    assert no_show["order_id"] == ORDER
    rig.watch.wait_state(LOCKED_LOADED)
    wait_for(lambda: rig.base.lock_state == LOCK_LOCKED, 5.0, "relock after the no-show")
    assert rig.watch.verify(issued.qr_token, QR).granted


def test_five_wrong_pins_lock_out(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, lockout_s=120.0)
    issued, records = issue_records(wall_now(rig))
    rig.node.load_credentials(records)
    rig.load()
    rig.drive_to_dropoff()
    wait_for(lambda: rig.node.core.order is not None
             and rig.node.core.order.dropoff_waypoint == DROPOFF, 5.0, "dropoff from robot_state")
    wrong = "123456" if issued.pin != "123456" else "654321"
    replies = [rig.watch.verify(wrong) for _ in range(5)]
    assert [r.attempts_left for r in replies] == [4, 3, 2, 1, 0]
    last = replies[-1]
    assert (last.granted, last.error_code) == (False, "locked_out")
    assert 119.0 < last.lockout_remaining_s <= 120.0
    lockout = rig.watch.wait_event("credential_lockout")
    assert lockout["alarm"] is True
    # Even the right PIN is refused during the cool-down.
    during = rig.watch.verify(issued.pin)
    assert (during.granted, during.error_code) == (False, "locked_out")
    assert during.lockout_remaining_s > 0
    assert rig.base.lock_state == LOCK_LOCKED


def test_door_forced_open_while_locked_is_tamper(ros_executor: SpinningExecutor) -> None:
    from std_srvs.srv import Trigger

    rig = Rig(ros_executor)
    rig.robot.report(MODE_AWAITING_LOAD, SHOP)
    wait_for(lambda: rig.watch.state.order_id == ORDER, 5.0, "order from robot_state")
    rig.base.set(door_closed=False)  # bolt still locked: forced
    tamper = rig.watch.wait_event("tamper")
    assert tamper["alarm"] is True
    rig.watch.wait_state(FAULT)
    assert rig.watch.state.tamper
    refused = rig.watch.open_for_loading()
    assert (refused.success, refused.message.split(":")[0]) == (False, "fault")
    assert not rig.watch.call(Trigger, "handoff/reset", Trigger.Request()).success  # door open
    rig.base.set(door_closed=True)
    wait_for(lambda: rig.base.lock_state == LOCK_LOCKED and rig.base.commands()[-1], 5.0,
             "lock after the forced door closed")
    wait_for(lambda: rig.watch.call(Trigger, "handoff/reset", Trigger.Request()).success, 5.0,
             "operator reset")
    rig.watch.wait_state(LOCKED_EMPTY, "locked_empty after the reset")
    assert not rig.watch.state.tamper


def test_unconfirmed_lock_command_is_a_fault(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, lock_ack_timeout_s=0.3)
    rig.robot.report(MODE_AWAITING_LOAD, SHOP)
    wait_for(lambda: rig.watch.state.order_id == ORDER, 5.0, "order from robot_state")
    rig.base.stuck = True  # the bolt jams: commands are acknowledged but it never moves
    assert rig.watch.open_for_loading().success
    fault = rig.watch.wait_event("lock_fault")
    assert "did not confirm unlock" in fault["detail"]
    rig.watch.wait_state(FAULT)
    assert not rig.watch.state.tamper


def test_short_secret_refuses_to_start(ros_context: Any) -> None:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.handoff import HandoffNode

    with pytest.raises(ValueError, match="handoff_secret"):
        HandoffNode(context=ros_context,
                    parameter_overrides=[Parameter("handoff_secret", value="short")])


def test_config_file_declares_only_known_parameters(ros_context: Any) -> None:
    import yaml
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.handoff import HandoffNode

    path = Path(__file__).resolve().parents[1] / "config" / "handoff.yaml"
    values = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    values["handoff_secret"] = SECRET
    values["state_path"] = str(Path(tempfile.mkdtemp(prefix="handoff_cfg_test_")) / "h.db")
    node = HandoffNode(context=ros_context,
                       parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    try:
        for name in values:
            assert node.has_parameter(name), name
            assert node.describe_parameter(name).description, name
    finally:
        node.destroy_node()


def test_event_times_follow_sim_time(ros_executor: SpinningExecutor) -> None:
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock

    clock_node = ros_executor.node("fake_clock")
    clock = clock_node.create_publisher(Clock, "/clock", QoSProfile(depth=10))
    rig = Rig(ros_executor, use_sim_time=True)
    clock.publish(Clock(clock=Time(sec=5000)))
    wait_for(lambda: rig.node.get_clock().now().nanoseconds >= 5000 * 10**9, 5.0, "sim time")
    rig.base.set(door_closed=False)
    tamper = rig.watch.wait_event("tamper")
    assert tamper["at"] == pytest.approx(5000.0)


# ---- restart mid-handoff (issue 7) -----------------------------------------------------------


def at_dropoff(rig: Rig) -> None:
    rig.drive_to_dropoff()
    wait_for(lambda: rig.node.core.order is not None
             and rig.node.core.order.dropoff_waypoint == DROPOFF, 5.0, "dropoff from robot_state")


def test_restart_with_goods_keeps_them_locked_for_the_order(
        ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor)
    issued, records = issue_records(wall_now(rig))
    rig.node.load_credentials(records)
    rig.load()
    at_dropoff(rig)
    wrong = "123456" if issued.pin != "123456" else "654321"
    assert [rig.watch.verify(wrong).attempts_left for _ in range(2)] == [4, 3]

    rig.restart()
    rig.watch.wait_state(LOCKED_LOADED, "locked_loaded after the restart")
    assert rig.watch.state.order_id == ORDER
    assert rig.base.lock_state == LOCK_LOCKED
    # The brute-force counter survived: one more wrong try leaves two.
    rig.robot.report(MODE_AWAITING_RECIPIENT, DROPOFF)
    wait_for(lambda: rig.node.core._waypoint == DROPOFF, 5.0, "robot_state after the restart")
    after = rig.watch.verify(wrong)
    assert (after.granted, after.attempts_left) == (False, 2), after.error_code
    # A valid credential still opens it.
    granted = rig.watch.verify(issued.pin)
    assert granted.granted, granted.error_code
    rig.watch.wait_state(OPEN_FOR_RECIPIENT)
    wait_for(lambda: rig.base.lock_state == LOCK_UNLOCKED, 5.0, "unlock for the recipient")


def test_used_codes_stay_used_across_a_restart(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, recipient_open_timeout_s=30.0)
    issued, records = issue_records(wall_now(rig))
    rig.node.load_credentials(records)
    rig.load()
    at_dropoff(rig)
    assert rig.watch.verify(issued.qr_token, QR).granted
    rig.watch.wait_state(OPEN_FOR_RECIPIENT)
    wait_for(lambda: rig.base.lock_state == LOCK_UNLOCKED, 5.0, "unlock for the recipient")
    rig.set_and_wait(door_closed=False)
    rig.set_and_wait(occupancy=EMPTY)
    rig.set_and_wait(door_closed=True)
    rig.watch.wait_event("delivered")
    rig.watch.wait_state(LOCKED_EMPTY)

    rig.restart()
    rig.watch.wait_state(LOCKED_EMPTY, "locked_empty after the restart")
    record = rig.node.credentials.book.record(ORDER)
    assert record is not None
    assert record.used_at is not None
    # The mission executor re-assigns the order after its own restart with the coordinator's
    # record (used_at still empty there): the robot's flag must not be lifted.
    from delivery_interfaces.srv import AssignHandoff

    from delivery_robot.handoff_record import record_to_json

    for _ in range(2):
        reply = rig.watch.call(AssignHandoff, "handoff/assign", AssignHandoff.Request(
            order_id=ORDER, shop_waypoint=SHOP, dropoff_waypoint=DROPOFF,
            credential_record=record_to_json(records[0])))
        assert reply.accepted, reply.message
    assert rig.node.credentials.book.record(ORDER).used_at is not None
    for credential, method in ((issued.qr_token, QR), (issued.pin, PIN)):
        replay = rig.watch.verify(credential, method)
        assert not replay.granted
    assert rig.base.lock_state == LOCK_LOCKED


def test_assign_is_idempotent_across_a_restart(ros_executor: SpinningExecutor) -> None:
    from delivery_interfaces.srv import AssignHandoff

    from delivery_robot.handoff_record import record_to_json

    rig = Rig(ros_executor)
    _, records = issue_records(wall_now(rig))
    request = AssignHandoff.Request(order_id=ORDER, shop_waypoint=SHOP, dropoff_waypoint=DROPOFF,
                                    credential_record=record_to_json(records[0]))
    assert rig.watch.call(AssignHandoff, "handoff/assign", request).accepted
    rig.load()
    rig.restart()
    rig.watch.wait_state(LOCKED_LOADED)
    assert rig.node.core.order is not None
    assert rig.node.core.order.shop_waypoint == SHOP
    again = rig.watch.call(AssignHandoff, "handoff/assign", request)
    assert again.accepted, again.message
    other = rig.watch.call(AssignHandoff, "handoff/assign", AssignHandoff.Request(
        order_id="order-99", shop_waypoint=SHOP, dropoff_waypoint=DROPOFF))
    assert (other.accepted, other.error_code) == (False, "goods_on_board")


def test_door_found_open_after_a_restart_is_tamper(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor)
    rig.load()
    rig.executor.executor.remove_node(rig.node)
    rig.executor._nodes.remove(rig.node)
    rig.node.destroy_node()
    rig.base.set(door_closed=False)  # forced open while the node was down
    rig.watch.state = None
    from delivery_robot.nodes.handoff import HandoffNode

    rig.node = rig.executor.add(HandoffNode(context=rig.executor.context,
                                            parameter_overrides=rig._parameters))
    rig.watch.wait_event("tamper")
    rig.watch.wait_state(FAULT)
    assert rig.watch.state.order_id == ORDER
    assert rig.watch.state.tamper


def test_unreadable_state_file_starts_in_fault(ros_executor: SpinningExecutor) -> None:
    import sqlite3

    path = Path(tempfile.mkdtemp(prefix="handoff_bad_state_")) / "h.db"
    from delivery_robot.handoff_store import HandoffStore

    HandoffStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO handoff (id, memory, saved_at) VALUES (1, 'garbage', 0)")
    rig = Rig(ros_executor, state_path=str(path))
    rig.watch.wait_state(FAULT)
    assert "unreadable" in rig.node.core.snapshot().fault_reason


# ---- occupancy from perception ---------------------------------------------------------------


class FakePerception:
    def __init__(self, ros_executor: SpinningExecutor) -> None:
        from std_msgs.msg import UInt8

        from delivery_robot.ros.qos import STATE_QOS

        self.node = ros_executor.node("fake_perception")
        self.publisher = self.node.create_publisher(UInt8, "compartment/occupancy", STATE_QOS)

    def report(self, occupancy: int) -> None:
        from std_msgs.msg import UInt8

        self.publisher.publish(UInt8(data=occupancy))


def test_perception_fills_in_an_unknown_occupancy(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor)
    rig.set_and_wait(occupancy=0)  # the base driver on hardware: UNKNOWN
    perception = FakePerception(ros_executor)
    perception.report(OCCUPIED)
    wait_for(lambda: rig.watch.state.occupancy == OCCUPIED, 5.0, "occupancy from perception")
    perception.report(EMPTY)
    wait_for(lambda: rig.watch.state.occupancy == EMPTY, 5.0, "empty from perception")


def test_known_compartment_state_wins_by_default(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor)  # occupancy_source: compartment_state
    perception = FakePerception(ros_executor)
    perception.report(OCCUPIED)
    rig.set_and_wait(occupancy=EMPTY)
    rig.base.publish()
    wait_for(lambda: rig.node._perception_occupancy is not None, 5.0, "perception sample")
    rig.base.publish()
    wait_for(lambda: rig.watch.state.occupancy == EMPTY, 5.0, "simulator's occupancy")
    assert rig.node._occupancy_fed == EMPTY


def test_perception_wins_when_configured_and_delivers(ros_executor: SpinningExecutor) -> None:
    rig = Rig(ros_executor, occupancy_source="perception")
    perception = FakePerception(ros_executor)
    issued, records = issue_records(wall_now(rig))
    rig.node.load_credentials(records)
    # Loading: the base keeps saying EMPTY (a stale simulator value); perception sees goods.
    rig.robot.report(MODE_AWAITING_LOAD, SHOP)
    wait_for(lambda: rig.watch.state.order_id == ORDER, 5.0, "order from robot_state")
    assert rig.watch.open_for_loading().success
    wait_for(lambda: rig.base.lock_state == LOCK_UNLOCKED, 5.0, "unlock for loading")
    rig.set_and_wait(door_closed=False)
    perception.report(OCCUPIED)
    wait_for(lambda: rig.watch.state.occupancy == OCCUPIED, 5.0, "perception's occupied")
    rig.set_and_wait(door_closed=True)
    rig.watch.wait_event("loaded")
    rig.watch.wait_state(LOCKED_LOADED)
    at_dropoff(rig)
    assert rig.watch.verify(issued.pin).granted
    wait_for(lambda: rig.base.lock_state == LOCK_UNLOCKED, 5.0, "unlock for the recipient")
    rig.set_and_wait(door_closed=False)
    perception.report(EMPTY)
    wait_for(lambda: rig.watch.state.occupancy == EMPTY, 5.0, "perception's empty")
    rig.set_and_wait(door_closed=True)
    delivered = rig.watch.wait_event("delivered")
    assert delivered["proof"]["photo_ref"].startswith("compartment_camera@")


def test_bad_occupancy_source_refuses_to_start(ros_context: Any) -> None:
    from rclpy.parameter import Parameter

    from delivery_robot.nodes.handoff import HandoffNode

    with pytest.raises(ValueError, match="occupancy_source"):
        HandoffNode(context=ros_context, parameter_overrides=[
            Parameter("handoff_secret", value=SECRET),
            Parameter("occupancy_source", value="camera")])
