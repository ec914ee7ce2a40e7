"""Simulated people: the shop owner who loads a waiting robot and the recipient at the door.

What they do is decided here, without ROS; the `sim_people` node carries out the calls
(`Act`s) over the same services a person's tablet, the robot's screen and the simulator's
compartment offer, and reports each answer back.

- Shop owner: when an order of the shop reaches `awaiting_load` (the robot is at the shop),
  they come after a delay, open the door (retrying while the bolt is still engaged), put the
  goods in, close the door (the handoff node locks it) and confirm the order as loaded.
- Recipient: when an order reaches `awaiting_recipient`, they come after a delay and show the
  QR token or enter the PIN (some first enter wrong PINs), then open the door, take the goods
  and close it. A no-show does nothing at all.
- Goods back at the shop: when an order ends (failed or cancelled) straight from `returning`,
  the robot has brought the goods back and the coordinator unlocks the compartment; the shop
  owner comes after the loading delay, opens the door, takes the goods out and closes it, so
  the robot can take its next order.

Every person's choices (delays, no-show, wrong PINs, QR or PIN) come from a random generator
seeded with the run's seed and the order's idempotency key, so the same seed gives the same
people whatever order the events arrive in.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any

from delivery_robot.order_lifecycle import OrderState

__all__ = [
    "Act",
    "ActKind",
    "Errand",
    "Method",
    "PeopleConfig",
    "PeopleStats",
    "RecipientPlan",
    "Role",
    "SimPeople",
    "plan_recipient",
    "shop_delay",
]

REQUESTED = OrderState.REQUESTED
RETURNING = OrderState.RETURNING
AWAITING_LOAD = OrderState.AWAITING_LOAD
AWAITING_RECIPIENT = OrderState.AWAITING_RECIPIENT
# States that end a visit under way: back to requested, cancelled, failed, returning.
ABANDON_STATES = frozenset({OrderState.REQUESTED, OrderState.CANCELLED, OrderState.FAILED,
                            OrderState.RETURNING})

# Answers to a correct credential that mean "not yet" rather than "no": try again later.
RETRY_VERIFY = frozenset({"not_at_dropoff", "door_not_closed", "no_order", "no_goods",
                          "unknown_order", "fault", "lock_not_confirmed", ""})
# Answers to confirm_loaded worth another try (the coordinator had not seen the robot arrive).
RETRY_CONFIRM = frozenset({"not_awaiting_load", "wrong_state", "internal_error", ""})


class Method(IntEnum):
    """VerifyHandoff.METHOD_*."""

    PIN = 0
    QR = 1


class Role(StrEnum):
    SHOP = "shop"
    RECIPIENT = "recipient"
    SHOP_TAKES_BACK = "shop_takes_back"


class ActKind(StrEnum):
    OPEN_DOOR = "open_door"  # /<robot>/sim/open_door
    LOAD = "load"  # /<robot>/sim/load
    UNLOAD = "unload"  # /<robot>/sim/unload
    CLOSE_DOOR = "close_door"  # /<robot>/sim/close_door
    CONFIRM_LOADED = "confirm_loaded"  # /fleet/confirm_loaded, as the shop
    VERIFY = "verify"  # /<robot>/handoff/verify


@dataclass(frozen=True)
class PeopleConfig:
    """How people behave. Delays are means; each person's is drawn uniformly in
    [0.5, 1.5] x the mean."""

    load_delay_s: float = 45.0  # robot at the shop -> the owner opens the door
    load_time_s: float = 10.0  # door open -> goods in, door closed
    take_back_delay_s: float = 10.0  # returned goods back at the shop -> the owner opens
    handoff_delay_s: float = 60.0  # robot at the door -> the recipient presents a credential
    unload_time_s: float = 8.0  # door open -> goods out, door closed
    no_show_rate: float = 0.05  # recipients who never come
    wrong_pin_rate: float = 0.05  # recipients who first enter wrong PINs
    wrong_pins: int = 2  # how many wrong PINs they enter first
    qr_share: float = 0.5  # recipients who show the QR (the others type the PIN)
    retry_s: float = 2.0  # a "not yet" answer: try again after this
    give_up_s: float = 300.0  # stop retrying one step after this long

    def __post_init__(self) -> None:
        for name in ("no_show_rate", "wrong_pin_rate", "qr_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        times = (self.load_delay_s, self.load_time_s, self.handoff_delay_s, self.unload_time_s,
                 self.take_back_delay_s)
        if min(times) < 0.0:
            raise ValueError("people's delays must be >= 0")
        if self.retry_s <= 0.0 or self.give_up_s <= 0.0 or self.wrong_pins < 0:
            raise ValueError("retry_s and give_up_s must be > 0, wrong_pins >= 0")


@dataclass(frozen=True)
class RecipientPlan:
    no_show: bool
    method: Method
    wrong_pins: tuple[str, ...]  # entered before the right credential
    delay_s: float


def _rng(seed: int, role: str, key: str) -> random.Random:
    return random.Random(f"sim-people:{seed}:{role}:{key}")


def plan_recipient(config: PeopleConfig, seed: int, key: str, pin: str) -> RecipientPlan:
    """What the recipient of the order with idempotency key `key` will do."""
    rng = _rng(seed, Role.RECIPIENT, key)
    no_show = rng.random() < config.no_show_rate
    method = Method.QR if rng.random() < config.qr_share else Method.PIN
    wrong: list[str] = []
    if rng.random() < config.wrong_pin_rate:
        while len(wrong) < config.wrong_pins:
            guess = f"{rng.randrange(1_000_000):06d}"
            if guess != pin:
                wrong.append(guess)
    delay = config.handoff_delay_s * rng.uniform(0.5, 1.5)
    return RecipientPlan(no_show, method, tuple(wrong), delay)


def shop_delay(config: PeopleConfig, seed: int, key: str) -> float:
    return config.load_delay_s * _rng(seed, Role.SHOP, key).uniform(0.5, 1.5)


@dataclass(frozen=True)
class Act:
    """One call a person makes now; report its answer with `SimPeople.answer`."""

    errand: int
    kind: ActKind
    robot_id: str
    order_id: str
    shop_id: str
    method: Method = Method.PIN
    credential: str = ""

    @property
    def describe(self) -> str:
        what = self.kind.value
        if self.kind is ActKind.VERIFY:
            what += f" ({self.method.name})"
        return f"{what} {self.order_id} at {self.robot_id}"


@dataclass
class Errand:
    """One person's visit to one robot for one order: a list of acts with waits between."""

    errand_id: int
    role: Role
    order_id: str
    robot_id: str
    shop_id: str
    steps: list[tuple[float, Act]]  # (wait before it, act)
    next_at: float
    index: int = 0
    step_started: float = 0.0
    in_flight: bool = False
    done: bool = False
    outcome: str = ""


@dataclass
class PeopleStats:
    loads: int = 0  # orders the shop owner loaded and confirmed
    taken_back: int = 0  # returned goods the shop owner took out of a robot
    handoffs: int = 0  # recipients who took their goods
    no_shows: int = 0  # recipients who never came
    wrong_pins: int = 0  # wrong PINs entered
    qr: int = 0  # handoffs by QR
    pin: int = 0  # handoffs by PIN
    refusals: int = 0  # "not yet" answers that were retried
    gave_up: int = 0  # errands abandoned (see `problems`)
    abandoned: int = 0  # errands dropped because the order moved on
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"loads": self.loads, "handoffs": self.handoffs, "no_shows": self.no_shows,
                "taken_back": self.taken_back,
                "wrong_pins": self.wrong_pins, "handoffs_qr": self.qr, "handoffs_pin": self.pin,
                "retried_refusals": self.refusals, "gave_up": self.gave_up,
                "abandoned": self.abandoned}


@dataclass
class _Order:
    key: str
    shop_id: str
    pin: str
    qr_token: str


class SimPeople:
    """All shop owners and recipients of one run. Not thread-safe: one caller thread."""

    def __init__(self, config: PeopleConfig | None = None, seed: int = 0) -> None:
        self.config = config or PeopleConfig()
        self.seed = seed
        self.stats = PeopleStats()
        self._orders: dict[str, _Order] = {}
        self._errands: dict[int, Errand] = {}
        self._by_order: dict[str, int] = {}  # order id -> its open errand
        self._served: set[tuple[str, int]] = set()  # (order, state) an errand was made for
        self._next_id = 1

    # -- inputs ------------------------------------------------------------------------------
    def order_submitted(self, order_id: str, key: str, shop_id: str, pin: str,
                        qr_token: str) -> None:
        """The shop got the recipient's PIN and QR token back (once) with the order."""
        self._orders[order_id] = _Order(key, shop_id, pin, qr_token)

    def on_status(self, order_id: str, state: int, robot_id: str, now: float,
                  previous: int | None = None) -> None:
        """An /fleet/order_status announcement (`state`, `previous`: OrderStatus.STATE_* =
        OrderState; `previous` None when not known)."""
        order = self._orders.get(order_id)
        if order is None:
            return  # not one of ours (e.g. submitted over the HTTP API by a person)
        open_id = self._by_order.get(order_id)
        if open_id is not None and state in ABANDON_STATES:
            # Cancelled, failed, sent back, or re-dispatched: whoever was on the way turns back.
            self.stats.abandoned += 1
            self._finish(self._errands[open_id], f"order moved to state {state}")
        if state == REQUESTED:  # re-dispatched: the next robot gets served afresh
            self._served = {s for s in self._served if s[0] != order_id}
        if (order_id, state) in self._served or not robot_id:
            return
        if state == AWAITING_LOAD:
            self._served.add((order_id, state))
            self._shop_errand(order_id, order, robot_id, now)
        elif state == AWAITING_RECIPIENT:
            self._served.add((order_id, state))
            self._recipient_errand(order_id, order, robot_id, now)
        elif state in (OrderState.FAILED, OrderState.CANCELLED) and previous == RETURNING:
            self._served.add((order_id, state))
            self._take_back_errand(order_id, order, robot_id, now)

    def _shop_errand(self, order_id: str, order: _Order, robot: str, now: float) -> None:
        c = self.config

        def act(kind: ActKind) -> Act:
            return Act(0, kind, robot, order_id, order.shop_id)

        steps = [(shop_delay(c, self.seed, order.key), act(ActKind.OPEN_DOOR)),
                 (c.load_time_s, act(ActKind.LOAD)),
                 (0.0, act(ActKind.CLOSE_DOOR)),
                 (0.0, act(ActKind.CONFIRM_LOADED))]
        self._add(Role.SHOP, order_id, robot, order.shop_id, steps, now)

    def _take_back_errand(self, order_id: str, order: _Order, robot: str, now: float) -> None:
        c = self.config

        def act(kind: ActKind) -> Act:
            return Act(0, kind, robot, order_id, order.shop_id)

        # The shop was told the goods are coming back (goods_returning): someone is waiting.
        steps = [(c.take_back_delay_s, act(ActKind.OPEN_DOOR)),
                 (c.unload_time_s, act(ActKind.UNLOAD)),
                 (0.0, act(ActKind.CLOSE_DOOR))]
        self._add(Role.SHOP_TAKES_BACK, order_id, robot, order.shop_id, steps, now)

    def _recipient_errand(self, order_id: str, order: _Order, robot: str, now: float) -> None:
        c = self.config
        plan = plan_recipient(c, self.seed, order.key, order.pin)
        if plan.no_show:
            self.stats.no_shows += 1
            return
        steps: list[tuple[float, Act]] = []
        wait = plan.delay_s
        for guess in plan.wrong_pins:
            steps.append((wait, Act(0, ActKind.VERIFY, robot, order_id, order.shop_id,
                                    Method.PIN, guess)))
            wait = 3.0  # typing the next one
        credential = order.qr_token if plan.method is Method.QR else order.pin
        steps.append((wait, Act(0, ActKind.VERIFY, robot, order_id, order.shop_id, plan.method,
                                credential)))
        steps.append((0.0, Act(0, ActKind.OPEN_DOOR, robot, order_id, order.shop_id)))
        steps.append((c.unload_time_s, Act(0, ActKind.UNLOAD, robot, order_id, order.shop_id)))
        steps.append((0.0, Act(0, ActKind.CLOSE_DOOR, robot, order_id, order.shop_id)))
        self._add(Role.RECIPIENT, order_id, robot, order.shop_id, steps, now)

    def _add(self, role: Role, order_id: str, robot: str, shop: str,
             steps: list[tuple[float, Act]], now: float) -> None:
        errand_id = self._next_id
        self._next_id += 1
        steps = [(wait, replace(act, errand=errand_id)) for wait, act in steps]
        errand = Errand(errand_id, role, order_id, robot, shop, steps, next_at=now + steps[0][0],
                        step_started=now)
        self._errands[errand_id] = errand
        self._by_order[order_id] = errand_id

    # -- what to do now ----------------------------------------------------------------------
    def due(self, now: float) -> list[Act]:
        """Acts to start now (at most one in flight per errand), oldest errand first."""
        acts: list[Act] = []
        for errand in self._errands.values():
            if errand.done or errand.in_flight or now < errand.next_at:
                continue
            errand.in_flight = True
            acts.append(errand.steps[errand.index][1])
        return acts

    def next_due(self) -> float | None:
        """The earliest sim time an errand acts again (None: nothing scheduled)."""
        times = [e.next_at for e in self._errands.values() if not e.done and not e.in_flight]
        return min(times, default=None)

    def answer(self, act: Act, ok: bool, code: str, now: float) -> None:
        """The answer to `act`: ok, or refused with an error code / message."""
        errand = self._errands.get(act.errand)
        if errand is None or errand.done:
            return
        errand.in_flight = False
        wrong_guess = act.kind is ActKind.VERIFY and act.method is Method.PIN and (
            act.credential != self._orders[act.order_id].pin)
        if wrong_guess:
            self.stats.wrong_pins += 1
            if code == "locked_out":
                self._give_up(errand, "locked out after wrong PINs", now)
                return
            self._advance(errand, now)  # a wrong PIN is refused: that was the plan
            return
        if act.kind is ActKind.VERIFY and code == "already_open":
            ok = True  # granted before; the answer was lost
        if ok:
            if act.kind is ActKind.VERIFY:
                if act.method is Method.QR:
                    self.stats.qr += 1
                else:
                    self.stats.pin += 1
            self._advance(errand, now)
            return
        retry = {ActKind.VERIFY: code in RETRY_VERIFY,
                 ActKind.CONFIRM_LOADED: code in RETRY_CONFIRM}.get(act.kind, True)
        if retry and now - errand.step_started < self.config.give_up_s:
            self.stats.refusals += 1
            errand.next_at = now + self.config.retry_s
            return
        self._give_up(errand, f"{act.describe}: refused ({code or 'no reason'})", now)

    def _advance(self, errand: Errand, now: float) -> None:
        errand.index += 1
        if errand.index >= len(errand.steps):
            if errand.role is Role.SHOP:
                self.stats.loads += 1
            elif errand.role is Role.RECIPIENT:
                self.stats.handoffs += 1
            else:
                self.stats.taken_back += 1
            self._finish(errand, "done")
            return
        errand.step_started = now
        errand.next_at = now + errand.steps[errand.index][0]

    def _give_up(self, errand: Errand, why: str, now: float) -> None:
        self.stats.gave_up += 1
        self.stats.problems.append(f"{now:.1f} s {errand.role.value} {errand.order_id}: {why}")
        self._finish(errand, why)

    def _finish(self, errand: Errand, outcome: str) -> None:
        errand.done = True
        errand.in_flight = False
        errand.outcome = outcome
        if self._by_order.get(errand.order_id) == errand.errand_id:
            del self._by_order[errand.order_id]
        self._errands.pop(errand.errand_id, None)

    # -- views -------------------------------------------------------------------------------
    @property
    def open_errands(self) -> list[Errand]:
        return list(self._errands.values())

    def known_orders(self) -> Iterable[str]:
        return self._orders.keys()
