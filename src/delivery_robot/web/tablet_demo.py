"""The tablet pages on a real coordinator core with emulated robots, no ROS: try it, test it.

`TabletDemo` builds what the coordinator node builds around the API (a `FleetCoordinator` on
an SQLite store, the event hub as its effect sink, the app under uvicorn on loopback) and
drives robots through their legs with the calls the node makes on `robot_state` messages.
The robots' handoff and safety services are `EmulatedRobots` (the same credential rules).
The browser tests, the screenshot tool and the websocket benchmark use it.

    python -m delivery_robot.web.tablet_demo [--port 8080] [--lang en]

serves the `town` world with two robots that drive themselves (in seconds, not to scale)
and prints sign-in links for each shop and the operator.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from delivery_robot.api_auth import RateLimiter, TokenRegistry, hash_token, new_token
from delivery_robot.credentials import ScryptParams
from delivery_robot.fleet_coordinator import (
    CoordinatorWorld,
    FleetCoordinator,
    MissionOutcome,
    RobotMode,
    RobotSample,
)
from delivery_robot.handoff_credentials import CredentialPolicy, HandoffCredentials
from delivery_robot.order_intake import OrderRequest, RobotCapacity, SizeClass
from delivery_robot.order_lifecycle import OrderState
from delivery_robot.order_store import OrderStore, StoredOrder
from delivery_robot.route_graph import load_route_graph
from delivery_robot.web.config import TabletSettings
from delivery_robot.web.emulated_robots import EmulatedRobots
from delivery_robot.web.events import EventHub
from delivery_robot.web.robot_link import RobotEvent
from delivery_robot.web.server import ApiServer
from delivery_robot.web.shop_api import create_app
from delivery_robot.web.world_map import map_from_route_graph

REPO = Path(__file__).resolve().parents[3]
TOWN = REPO / "config" / "worlds" / "town.yaml"
FAST_PIN_HASH = ScryptParams(log2_n=1, r=1, p=1)  # tests: a PIN check costs nothing


class TabletDemo:
    def __init__(
        self,
        workdir: str | Path,
        *,
        route_graph: str | Path = TOWN,
        robots: tuple[str, ...] = ("robot1", "robot2"),
        tablet: TabletSettings | None = None,
        clock: Callable[[], float] = time.time,
        pin_hash_cost: ScryptParams | None = None,
        grant_delay_s: float = 0.3,
        rate: tuple[float, int] = (1000.0, 1000),
    ) -> None:
        self.clock = clock
        self.grant_delay_s = grant_delay_s
        route = load_route_graph(Path(route_graph), validate=False)
        self.world_map = map_from_route_graph(route)
        self.points = {w["name"]: (float(w["x"]), float(w["y"]))
                       for w in self.world_map["waypoints"]}
        self.home = next(w.name for w in route.depots) if route.depots else \
            next(iter(self.points))
        self.hub = EventHub(clock)
        self.store = OrderStore(Path(workdir) / "tablet_demo_orders.db", clock=clock)
        policy = CredentialPolicy(secret_key=secrets.token_bytes(32))
        if pin_hash_cost is not None:
            policy = replace(policy, pin_hash_cost=pin_hash_cost)
        self.core = FleetCoordinator(
            self.store, CoordinatorWorld.from_route_graph(route), HandoffCredentials(policy),
            fleet=[RobotCapacity(SizeClass.LARGE, 20.0)], effect_sink=self.hub.publish,
            now=clock())
        self.robots = EmulatedRobots(policy, self.core.get_order, self._record, clock,
                                     robot_ids=robots, on_granted=self._granted,
                                     on_estop=self._estop)
        self.tokens = {shop.shop_id: new_token() for shop in route.shops}
        self.tokens["operator"] = new_token()
        registry = TokenRegistry({s: hash_token(t) for s, t in self.tokens.items()
                                  if s != "operator"}, hash_token(self.tokens["operator"]))
        self.app = create_app(self.core, registry, RateLimiter(*rate), clock, self.world_map,
                              events=self.hub, robot_link=self.robots,
                              tablet=tablet or TabletSettings())
        self._samples: dict[str, RobotSample] = {}
        self._before_estop: dict[str, RobotSample] = {}
        self._server: ApiServer | None = None
        self._timers: list[threading.Timer] = []
        for robot_id in robots:
            self.robot_idle(robot_id)

    # -- serving ------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = ApiServer(self.app, host, port)
        self._server.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.port}"

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def close(self) -> None:
        self.stop()
        self.store.close()

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    # -- orders -------------------------------------------------------------------------------

    def submit(self, shop_id: str, dropoff: str, *, size: str = "medium", weight_kg: float = 1.0,
               note: str = "") -> tuple[StoredOrder, Any]:
        """An order straight into the core (as from another tablet); returns the credentials."""
        reply = self.core.submit_order(OrderRequest(shop_id, dropoff, size, weight_kg, note),
                                       self.clock())
        if not reply.accepted or reply.order is None:
            raise ValueError(f"order refused: {reply.error_code}: {reply.message}")
        return reply.order, reply.credentials

    def order(self, order_id: str) -> StoredOrder:
        order = self.core.get_order(order_id)
        assert order is not None, order_id
        return order

    # -- robots -------------------------------------------------------------------------------

    def robot_state(self, robot_id: str, mode: RobotMode, waypoint: str = "", *,
                    mission_id: str = "", order_ids: tuple[str, ...] = (),
                    between: tuple[str, str] | None = None) -> None:
        """A `robot_state` message as the coordinator node feeds it to the core."""
        if between is not None:
            (ax, ay), (bx, by) = self.points[between[0]], self.points[between[1]]
            x, y = (ax + bx) / 2, (ay + by) / 2
        else:
            x, y = self.points.get(waypoint, (0.0, 0.0))
        sample = RobotSample(robot_id, mode, x=x, y=y, current_waypoint=waypoint,
                             battery=0.8, mission_id=mission_id, order_ids=order_ids)
        self._samples[robot_id] = sample
        self.core.on_robot_state(sample, self.clock())

    def heartbeat(self) -> None:
        """Every robot repeats its last state, and the core checks heartbeats (as its timer)."""
        for robot_id, sample in list(self._samples.items()):
            if robot_id not in self.robots.offline:
                self.core.on_robot_state(sample, self.clock())
        self.core.tick(self.clock())

    def robot_idle(self, robot_id: str, waypoint: str | None = None) -> None:
        self.robot_state(robot_id, RobotMode.IDLE, waypoint or self.home)

    def _leg(self, order_id: str, mode: RobotMode, waypoint: str = "",
             between: tuple[str, str] | None = None) -> StoredOrder:
        order = self.order(order_id)
        if order.robot_id is None or order.mission_id is None:
            raise ValueError(f"order {order_id} has no robot ({order.state.label})")
        self.robot_state(order.robot_id, mode, waypoint, mission_id=order.mission_id,
                         order_ids=(order_id,), between=between)
        return self.order(order_id)

    def drive_to_shop(self, order_id: str) -> StoredOrder:
        order = self.order(order_id)
        return self._leg(order_id, RobotMode.TO_PICKUP,
                         between=(self.home, order.pickup_waypoint))

    def arrive_at_shop(self, order_id: str) -> StoredOrder:
        return self._leg(order_id, RobotMode.AWAITING_LOAD, self.order(order_id).pickup_waypoint)

    def drive_to_dropoff(self, order_id: str) -> StoredOrder:
        order = self.order(order_id)
        return self._leg(order_id, RobotMode.TO_DROPOFF,
                         between=(order.pickup_waypoint, order.dropoff_waypoint))

    def arrive_at_dropoff(self, order_id: str) -> StoredOrder:
        return self._leg(order_id, RobotMode.AWAITING_RECIPIENT,
                         self.order(order_id).dropoff_waypoint)

    def finish_handoff(self, order_id: str) -> StoredOrder:
        """The recipient opened, took the goods and closed: the robot leaves (delivered)."""
        order = self.order(order_id)
        return self._leg(order_id, RobotMode.RETURNING,
                         between=(order.dropoff_waypoint, self.home))

    def back_home(self, order_id: str) -> None:
        """The robot ends the delivery mission (its action result) and idles at the depot."""
        order = self.order(order_id)
        if order.robot_id is None or order.mission_id is None:
            raise ValueError(f"order {order_id} has no robot ({order.state.label})")
        self.core.on_mission_result(order.robot_id, order.mission_id, MissionOutcome.SUCCEEDED,
                                    self.clock(), delivered_order_ids=[order_id])
        self.robot_idle(order.robot_id)

    def to_the_door(self, shop_id: str, dropoff: str, **order: Any) -> tuple[str, Any]:
        """A new order taken all the way to the customer's door (the shop's loading confirmed
        as its tablet would); returns its id and the credentials."""
        created, credentials = self.submit(shop_id, dropoff, **order)
        order_id = created.order_id
        self.drive_to_shop(order_id)
        self.arrive_at_shop(order_id)
        reply = self.core.confirm_loaded(order_id, shop_id, self.clock())
        if not reply.accepted:
            raise ValueError(f"loading not confirmed: {reply.message}")
        self.drive_to_dropoff(order_id)
        self.arrive_at_dropoff(order_id)
        return order_id, credentials

    def _granted(self, robot_id: str, order_id: str) -> None:
        # Called on the web server's loop: the lid open/close and the store write happen
        # later on a thread, as the robot's own events would.
        self._later(self.finish_handoff, order_id)

    def _estop(self, robot_id: str, engaged: bool) -> None:
        """The robot reports MODE_ESTOP while latched, and its previous mode once reset."""
        sample = self._samples.get(robot_id)
        if sample is None:
            return
        if engaged and sample.mode is not RobotMode.ESTOP:
            self._before_estop[robot_id] = sample
            sample = replace(sample, mode=RobotMode.ESTOP)
        elif not engaged and robot_id in self._before_estop:
            sample = self._before_estop.pop(robot_id)
        else:
            return
        self._later(self._report, robot_id, sample)

    def _report(self, robot_id: str, sample: RobotSample) -> None:
        self._samples[robot_id] = sample
        self.core.on_robot_state(sample, self.clock())

    def _later(self, work: Callable[..., Any], *args: Any) -> None:
        """Off the web server's loop (the core writes to SQLite), like a robot's message."""
        timer = threading.Timer(self.grant_delay_s, work, args)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _record(self, order_id: str) -> Any:
        try:
            return self.store.credentials(order_id)
        except Exception:  # noqa: BLE001 - unknown order: the robot has no record
            return None


def showcase(demo: TabletDemo, shop_id: str = "bakery") -> dict[str, str]:
    """Orders of `shop_id` in the states a page shows differently, for screenshots and the
    accessibility audit: one delivered, one with its robot waiting at the shop, one at the
    customer's door whose robot reports a tamper alarm. Needs three free robots."""
    delivered, _ = demo.to_the_door(shop_id, "house_s8")
    demo.finish_handoff(delivered)
    demo.back_home(delivered)
    waiting, _ = demo.submit(shop_id, "house_s1", note="2층 계단 앞 / by the stairs, 2nd floor")
    demo.drive_to_shop(waiting.order_id)
    demo.arrive_at_shop(waiting.order_id)
    at_door, _ = demo.to_the_door(shop_id, "house_s5")
    demo.robots.emit(RobotEvent(demo.order(at_door).robot_id or "", "tamper", at_door,
                                "lid opened while locked", demo.clock(), True))
    return {"delivered": delivered, "waiting": waiting.order_id, "at_door": at_door}


# ---- python -m delivery_robot.web.tablet_demo ------------------------------------------------


def _autopilot(demo: TabletDemo, stop: threading.Event, step_s: float) -> None:
    """Robots that drive themselves: each order moves one leg every `step_s`; the shop loads
    and the recipient opens on the pages."""
    due: dict[str, float] = {}
    while not stop.wait(0.5):
        now = time.monotonic()
        for order in demo.core.list_orders():
            robot = order.robot_id
            if robot is None or now < due.get(order.order_id, 0.0):
                continue
            sample = demo._samples.get(robot)
            moving = sample is not None and sample.mode is RobotMode.TO_DROPOFF
            step = {OrderState.ASSIGNED: demo.drive_to_shop,
                    OrderState.TO_PICKUP: demo.arrive_at_shop,
                    OrderState.IN_TRANSIT: demo.arrive_at_dropoff if moving
                    else demo.drive_to_dropoff}.get(order.state)
            if step is not None:
                step(order.order_id)
                due[order.order_id] = now + step_s
        for order in demo.core.list_orders(state=OrderState.DELIVERED):
            sample = demo._samples.get(order.robot_id or "")
            if sample is None or sample.mission_id != order.mission_id:
                continue  # this robot has moved on already
            if now >= due.setdefault(order.order_id + "/home", now + step_s):
                demo.back_home(order.order_id)
        demo.heartbeat()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--lang", choices=("ko", "en"), default="ko")
    parser.add_argument("--step-s", type=float, default=8.0, help="seconds per robot leg")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tablet_demo_") as workdir:
        demo = TabletDemo(workdir, tablet=replace(TabletSettings(), default_language=args.lang))
        demo.start(args.host, args.port)
        base = f"http://{args.host}:{demo._server.port if demo._server else args.port}"
        print(f"tablet demo on {base} (emulated robots, no ROS; Ctrl-C stops)", flush=True)
        for who, token in demo.tokens.items():
            page = "ops" if who == "operator" else "shop"
            print(f"  {who:<10} {base}/{page}#token={token}", flush=True)
        stop = threading.Event()
        pilot = threading.Thread(target=_autopilot, args=(demo, stop, args.step_s), daemon=True)
        pilot.start()
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            pilot.join(2.0)
            demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
