"""A thread-safe fan-out of order events to websocket subscribers.

`publish()` is called by the coordinator's effect sink *under the coordinator's lock*, from any
thread, so it must never block: it only filters, converts and hands each event to the
subscriber's event loop with `call_soon_threadsafe`. A subscriber that falls behind (its queue
is full) is dropped rather than slowing the coordinator; its websocket is then closed so the
client reconnects and re-reads the order list.

Besides the coordinator's effects, the web layer publishes events of its own with
`publish_event` (a recipient's lockout, robot-side tamper alarms, operator commands). Alerts
get an id and a time and the newest are kept, so a page that reconnects re-reads them
(`recent_alerts`) instead of losing what happened while it was away.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from delivery_robot.api_auth import Caller
from delivery_robot.fleet_coordinator import Alert, Announce, Audience, Effect

QUEUE_LIMIT = 256
RECENT_ALERTS = 200
OPERATOR_ONLY_TYPES = frozenset({"operator_command"})
OVERFLOW: dict[str, Any] = {"type": "overflow"}  # sentinel: the subscriber fell behind


def event_of(effect: Effect) -> dict[str, Any] | None:
    """The JSON form of an effect a shop or operator may hear about (None: internal only)."""
    if isinstance(effect, Announce):
        e = effect.event
        return {
            "type": "order_status",
            "order_id": e.order_id,
            "shop_id": e.shop_id,
            "sequence": e.sequence,
            "state": e.state.label,
            "previous_state": e.previous_state.label,
            "reason": e.reason,
            "robot_id": e.robot_id,
            "queue_position": effect.queue_position,
            "at": e.at,
        }
    if isinstance(effect, Alert):
        return {
            "type": "alert",
            "kind": effect.kind.value,
            "audience": effect.audience.value,
            "message": effect.message,
            "order_id": effect.order_id,
            "shop_id": effect.shop_id,
            "robot_id": effect.robot_id,
        }
    return None


def visible_to(caller: Caller, event: dict[str, Any]) -> bool:
    """Shops hear their own orders' events and alerts addressed to them; the operator all."""
    if caller.is_operator:
        return True
    if event.get("type") in OPERATOR_ONLY_TYPES:
        return False
    if event.get("type") == "alert" and event.get("audience") == Audience.OPERATOR.value:
        return False
    shop_id = event.get("shop_id")
    return bool(shop_id) and caller.may_see(str(shop_id))


@dataclass(eq=False)
class Subscription:
    caller: Caller
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    dropped: bool = False

    def _put(self, event: dict[str, Any]) -> None:  # runs in the subscriber's loop
        if self.dropped:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(OVERFLOW)


class EventHub:
    """Fan-out from the coordinator (any thread) to asyncio subscribers."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self._clock = clock
        self._alert_ids = itertools.count(1)
        self._recent_alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)

    def set_clock(self, clock: Callable[[], float]) -> None:
        """The clock that stamps alerts (the app's, so alerts and orders share one time)."""
        self._clock = clock

    def subscribe(self, caller: Caller) -> Subscription:
        """Call from the subscriber's running event loop."""
        sub = Subscription(caller, asyncio.get_running_loop())
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def recent_alerts(self, caller: Caller) -> list[dict[str, Any]]:
        """The newest alerts `caller` may see, oldest first."""
        with self._lock:
            alerts = list(self._recent_alerts)
        return [a for a in alerts if visible_to(caller, a)]

    def publish(self, effects: Sequence[Effect]) -> None:
        """An `EffectSink`: never blocks, never raises into the coordinator."""
        self._fan_out([ev for ev in map(event_of, effects) if ev is not None])

    def publish_event(self, event: dict[str, Any]) -> None:
        """An event of the web layer's own (same rules as the coordinator's; any thread)."""
        self._fan_out([dict(event)])

    def _fan_out(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        with self._lock:
            for event in events:
                if event.get("type") == "alert":
                    event.setdefault("id", next(self._alert_ids))
                    event.setdefault("at", self._clock())
                    self._recent_alerts.append(event)
            subscribers = list(self._subscribers)
        gone: list[Subscription] = []
        for sub in subscribers:
            for event in events:
                if not visible_to(sub.caller, event):
                    continue
                try:
                    sub.loop.call_soon_threadsafe(sub._put, event)
                except RuntimeError:  # its loop is closed: the server stopped
                    gone.append(sub)
                    break
        for sub in gone:
            self.unsubscribe(sub)
