"""sim_people: the simulated shop owners and recipients of a headless run, as one ROS node.

Shop owners submit the seeded order stream of `delivery_robot.order_generator` on
`/fleet/submit_order` at its sim times, keep the recipient's PIN and QR token the answer
carries (once), and load robots; recipients verify and take their goods
(`delivery_robot.sim_people` decides who does what and when). The node carries the people's
acts out over the services a person's tablet, the robot's screen and the simulator offer:
`/fleet/confirm_loaded`, `/<robot>/handoff/verify`, `/<robot>/sim/open_door`, `sim/load`,
`sim/unload`, `sim/close_door`. Every `/fleet/order_status` announcement is also kept, per
order, for the run's KPIs (`traces()`).

Time is sim time (`use_sim_time`; a timer every `tick_period_s` checks what is due). Service
calls never block: each act is sent with call_async and its answer fed back; an act whose
service is not up yet, or whose answer does not come within `call_timeout_s` (wall), counts as
a "not yet" and is tried again later.

`hold` / `release` (set by `delivery-sim`): called around every call in flight, so the
simulator can hold its clock while a person is busy at a service - a person's act then takes
no sim time whatever the machine's load, which keeps runs with one seed close to identical.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from delivery_interfaces.msg import OrderStatus
from delivery_interfaces.srv import ConfirmLoaded, SubmitOrder, VerifyHandoff
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.task import Future
from std_srvs.srv import Trigger

from delivery_robot.order_generator import DemandConfig, OrderArrival, OrderGenerator, parse_clock
from delivery_robot.order_lifecycle import OrderState
from delivery_robot.ros.node_main import run_node
from delivery_robot.ros.parameters import declare
from delivery_robot.ros.paths import share_file
from delivery_robot.ros.qos import EVENT_QOS
from delivery_robot.route_graph import load_route_graph
from delivery_robot.sim_people import Act, ActKind, PeopleConfig, PeopleStats, SimPeople
from delivery_robot.sim_report import OrderTrace

Hook = Callable[[str], None]


@dataclass
class _Call:
    future: Future
    deadline: float  # wall (monotonic)
    done: Callable[[Any], None]  # takes the response, or None on a timeout
    hold_key: str


class SimPeopleNode(Node):
    def __init__(self, **node_options: Any) -> None:
        """`node_options` go to rclpy's Node (context, parameter_overrides: used by tests)."""
        super().__init__("sim_people", **node_options)
        self.hold: Hook | None = None  # see the module docstring
        self.release: Hook | None = None
        self.on_transition: Callable[[OrderStatus], None] | None = None  # e.g. a printer
        self._configure()

    # ---- set-up ------------------------------------------------------------------------------

    def _configure(self) -> None:
        world = declare(self, "world", "town", "World name: share/config/worlds/<world>.yaml")
        route_file = declare(self, "route_graph_file", "", "Route graph YAML; overrides world")
        self.seed = int(self._number("seed", 0, "Seed of the order stream and the people"))
        self.orders_until_s = self._number("orders_until_s", 1800.0,
                                           "Shops order during [0, this) of sim time, s")
        self.tick_period_s = self._number("tick_period_s", 0.5,
                                          "How often due orders and acts are checked, sim s")
        self.call_timeout_s = self._number(
            "call_timeout_s", 10.0, "An unanswered service call is tried again after this "
            "many wall s")
        day_start = str(declare(self, "day_start", "11:30", "Clock time of sim time 0 (HH:MM)"))
        rate = self._number("orders_per_shop_hour", 3.6,
                            "Base order rate of every shop, per hour (peaks add to it)")
        lunch = self._number("lunch_peak_factor", 2.0,
                             "Extra rate at the lunch peak (12:15), as a multiple of the base")
        dinner = self._number("dinner_peak_factor", 2.5,
                              "Extra rate at the dinner peak (18:30), as a multiple of the base")
        if not (self.tick_period_s > 0 and self.call_timeout_s > 0 and self.orders_until_s >= 0
                and math.isfinite(self.orders_until_s)):
            raise ValueError("tick_period_s and call_timeout_s must be > 0, orders_until_s >= 0")
        defaults = DemandConfig()
        lunch_peak, dinner_peak = defaults.peaks
        demand = DemandConfig(
            orders_per_shop_hour=rate, day_start_h=parse_clock(day_start),
            peaks=(replace(lunch_peak, factor=lunch), replace(dinner_peak, factor=dinner)))
        people = self._declare_people()

        path = Path(route_file) if route_file else share_file(f"config/worlds/{world}.yaml")
        route = load_route_graph(path, validate=False)
        self.generator = OrderGenerator.from_route_graph(route, demand, self.seed)
        self.arrivals: list[OrderArrival] = self.generator.orders(self.orders_until_s)
        self.people = SimPeople(people, self.seed)

        self._lock = threading.Lock()  # traces and counters, read by delivery-sim's thread
        self._traces: dict[str, OrderTrace] = {}
        self._next_arrival = 0
        self.submitted = 0
        self.refused = 0
        self.refusals: dict[str, int] = {}
        self.submit_latencies_s: list[float] = []
        self._calls: dict[int, _Call] = {}
        self._call_ids = 0
        self._service_clients: dict[tuple[Any, str], Any] = {}
        self.submit_client = self.create_client(SubmitOrder, "/fleet/submit_order")
        self.confirm_client = self.create_client(ConfirmLoaded, "/fleet/confirm_loaded")
        self.create_subscription(OrderStatus, "/fleet/order_status", self._on_status, EVENT_QOS)
        self.create_timer(self.tick_period_s, self._on_tick)
        self.get_logger().info(
            f"sim_people: {len(self.arrivals)} orders from {len(self.generator.shops)} shops "
            f"in {self.orders_until_s:g} s (seed {self.seed}, expected "
            f"{self.generator.expected_orders(self.orders_until_s):.1f})")

    def _number(self, name: str, default: float, description: str) -> float:
        """A number parameter that takes an int or a float alike (a params file's `20` for
        20.0), and refuses anything else by name."""
        descriptor = ParameterDescriptor(description=description, dynamic_typing=True,
                                         read_only=True)
        value = self.declare_parameter(name, default, descriptor).value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}: must be a number, got {value!r}")
        return float(value)

    def _declare_people(self) -> PeopleConfig:
        """`people.<field>` parameters for every PeopleConfig value; the core validates them."""
        defaults = PeopleConfig()
        values: dict[str, Any] = {}
        for item in fields(PeopleConfig):
            default = getattr(defaults, item.name)
            value = self._number(f"people.{item.name}", default,
                                 f"sim_people.PeopleConfig.{item.name}")
            if isinstance(default, int) and value != int(value):
                raise ValueError(f"people.{item.name}: must be a whole number, got {value}")
            values[item.name] = type(default)(value)
        return PeopleConfig(**values)

    # ---- views for delivery-sim (any thread) -------------------------------------------------

    def traces(self) -> list[OrderTrace]:
        with self._lock:
            return [OrderTrace(t.order_id, t.shop_id, t.key, t.submitted_at, dict(t.events))
                    for t in self._traces.values()]

    def counts(self) -> dict[str, int]:
        """Orders by what became of them so far (for progress lines)."""
        with self._lock:
            states = [t.state for t in self._traces.values() if t.events]
        delivered = sum(s is OrderState.DELIVERED for s in states)
        failed = sum(s is OrderState.FAILED for s in states)
        cancelled = sum(s is OrderState.CANCELLED for s in states)
        return {"submitted": self.submitted, "due": len(self.arrivals),
                "delivered": delivered, "failed": failed, "cancelled": cancelled,
                "open": len(states) - delivered - failed - cancelled, "refused": self.refused}

    @property
    def stats(self) -> PeopleStats:
        return self.people.stats

    # ---- time --------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_tick(self) -> None:
        now = self._now()
        wall = time.monotonic()
        for call_id, call in list(self._calls.items()):
            if wall > call.deadline and not call.future.done():
                del self._calls[call_id]
                self._release(call.hold_key)
                call.done(None)
        while (self._next_arrival < len(self.arrivals)
               and self.arrivals[self._next_arrival].at_s <= now + 1e-9):
            if not self.submit_client.service_is_ready():
                break  # the coordinator is not up yet: submit when it is
            self._submit(self.arrivals[self._next_arrival])
            self._next_arrival += 1
        for act in self.people.due(now):
            self._carry_out(act)

    # ---- calls -------------------------------------------------------------------------------

    def _call(self, client: Any, request: Any, done: Callable[[Any], None], key: str) -> None:
        """call_async with a wall-time deadline; `done(response or None)` in this thread."""
        if not client.service_is_ready():
            done(None)
            return
        self._call_ids += 1
        call_id = self._call_ids
        future = client.call_async(request)
        self._hold(key)
        self._calls[call_id] = _Call(future, time.monotonic() + self.call_timeout_s, done, key)

        def finished(fut: Future) -> None:
            call = self._calls.pop(call_id, None)
            if call is None:
                return  # timed out before; already handled
            self._release(key)
            try:
                response = fut.result()
            except Exception as error:  # noqa: BLE001 - a failed call is a "not yet"
                self.get_logger().warning(f"{key}: call failed: {error!r}")
                response = None
            done(response)

        future.add_done_callback(finished)

    def _hold(self, key: str) -> None:
        if self.hold is not None:
            self.hold(key)

    def _release(self, key: str) -> None:
        if self.release is not None:
            self.release(key)

    def _submit(self, arrival: OrderArrival) -> None:
        request = SubmitOrder.Request(
            shop_id=arrival.shop_id, dropoff_waypoint=arrival.dropoff_waypoint,
            size=arrival.size, weight_kg=arrival.weight_kg,
            note=f"simulated order {arrival.index}", idempotency_key=arrival.key)
        sent_at, sent_wall = self._now(), time.monotonic()

        def done(response: Any) -> None:
            if response is None:
                self.get_logger().warning(f"order {arrival.key}: no answer; submitting again")
                self._submit(arrival)  # the idempotency key makes a retry safe
                return
            with self._lock:
                self.submit_latencies_s.append(time.monotonic() - sent_wall)
                if not response.accepted:
                    self.refused += 1
                    code = response.error_code or "refused"
                    self.refusals[code] = self.refusals.get(code, 0) + 1
                    self.get_logger().warning(
                        f"order {arrival.key} refused: {code}: {response.message}")
                    return
                self.submitted += 1
                order_id = response.order.order_id
                trace = self._traces.setdefault(order_id, OrderTrace(order_id, arrival.shop_id))
                trace.key, trace.submitted_at = arrival.key, sent_at
            self.people.order_submitted(order_id, arrival.key, arrival.shop_id,
                                        response.recipient_pin, response.recipient_qr_token)
            state = trace.state
            if state is not None:  # announcements can overtake the answer
                self.people.on_status(order_id, int(state), self._robot_of(trace), self._now())

        self._call(self.submit_client, request, done, f"submit {arrival.key}")

    @staticmethod
    def _robot_of(trace: OrderTrace) -> str:
        events = trace.ordered
        return events[-1][3] if events else ""

    def _client(self, kind: Any, name: str) -> Any:
        client = self._service_clients.get((kind, name))
        if client is None:
            client = self._service_clients[(kind, name)] = self.create_client(kind, name)
        return client

    def _carry_out(self, act: Act) -> None:
        robot = act.robot_id
        key = act.describe

        def answer(ok: bool, code: str) -> None:
            self.people.answer(act, ok, code, self._now())

        if act.kind is ActKind.CONFIRM_LOADED:
            self._call(self.confirm_client,
                       ConfirmLoaded.Request(order_id=act.order_id, shop_id=act.shop_id),
                       lambda r: answer(bool(r and r.accepted), r.error_code if r else ""), key)
        elif act.kind is ActKind.VERIFY:
            request = VerifyHandoff.Request(order_id=act.order_id, method=int(act.method),
                                            credential=act.credential)
            self._call(self._client(VerifyHandoff, f"/{robot}/handoff/verify"), request,
                       lambda r: answer(bool(r and r.granted), r.error_code if r else ""), key)
        else:
            self._call(self._client(Trigger, f"/{robot}/sim/{act.kind.value}"),
                       Trigger.Request(),
                       lambda r: answer(bool(r and r.success), r.message if r else ""), key)

    # ---- order status ------------------------------------------------------------------------

    def _on_status(self, status: OrderStatus) -> None:
        # When it was heard, in sim time: the coordinator stamps transitions with its store's
        # clock, which need not be the sim clock.
        at = self._now()
        with self._lock:
            trace = self._traces.setdefault(status.order_id,
                                            OrderTrace(status.order_id, status.shop_id))
            new = trace.add(int(status.sequence), int(status.state), at, status.reason,
                            status.robot_id)
        if not new:
            return
        if self.on_transition is not None:
            self.on_transition(status)
        self.people.on_status(status.order_id, int(status.state), status.robot_id, self._now(),
                              previous=int(status.previous_state))


def main() -> int:
    return run_node(SimPeopleNode)


if __name__ == "__main__":
    raise SystemExit(main())
