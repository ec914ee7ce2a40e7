"""Benchmark: p99 latency of `GET /api/v1/orders/{id}` at 200 requests/s over real HTTP.

The API (real FleetCoordinator on a SQLite store in WAL mode, token auth, rate limiter) runs
under uvicorn in a separate process, so the client's timing loop does not share a GIL with the
server; the client is one keep-alive httpx connection on loopback, paced at 200 requests/s.
Baseline, same run and same server: a trivial FastAPI endpoint returning a constant, i.e. what
uvicorn + FastAPI + loopback cost without our auth, store read and serialisation.

Target (issue 3): p99 <= 20 ms. Run alone: `tools/ros_env python -m bench shop_api`.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

RATE_HZ = 200.0
REQUESTS = 1500  # 7.5 s per endpoint at 200/s
WARMUP = 100
TARGET_MS = 20.0


def _serve(conn: Connection, workdir: str) -> None:
    """Server process: coordinator + API + constant endpoint on a free loopback port."""
    from delivery_robot.api_auth import RateLimiter, TokenRegistry, hash_token, new_token
    from delivery_robot.credentials import ScryptParams
    from delivery_robot.demo_map import DemoMap
    from delivery_robot.fleet_coordinator import CoordinatorWorld, FleetCoordinator
    from delivery_robot.handoff_credentials import CredentialPolicy, HandoffCredentials
    from delivery_robot.order_intake import OrderRequest, RobotCapacity, SizeClass
    from delivery_robot.order_store import OrderStore
    from delivery_robot.web.events import EventHub
    from delivery_robot.web.server import ApiServer
    from delivery_robot.web.shop_api import create_app
    from delivery_robot.web.world_map import map_from_demo_map

    demo = DemoMap(waypoints={"depot": (0.0, 0.0), "bakery": (30.0, 0.0),
                              "house_1": (60.0, 0.0)},
                   shops={"bakery": "bakery"}, depot="depot")
    hub = EventHub()
    store = OrderStore(Path(workdir) / "orders.db")
    core = FleetCoordinator(
        store, CoordinatorWorld.from_demo_map(demo),
        HandoffCredentials(CredentialPolicy(secret_key=b"k" * 32,
                                            pin_hash_cost=ScryptParams(log2_n=1, r=1, p=1))),
        fleet=[RobotCapacity(SizeClass.LARGE, 20.0)], effect_sink=hub.publish,
        now=time.time())
    for i in range(200):  # a store that is not empty
        core.submit_order(OrderRequest("bakery", "house_1", 1, 1.0, f"n{i}"), time.time())
    reply = core.submit_order(OrderRequest("bakery", "house_1", 1, 2.0), time.time())
    assert reply.order is not None
    token = new_token()
    app = create_app(core, TokenRegistry({"bakery": hash_token(token)}, hash_token(new_token())),
                     RateLimiter(10_000.0, 10_000), time.time, map_from_demo_map(demo),
                     events=hub)

    @app.get("/bench/constant")
    async def constant() -> dict[str, str]:
        return {"status": "ok"}

    server = ApiServer(app, "127.0.0.1", 0, log_level="error")
    server.start()
    conn.send((server.port, token, reply.order.order_id))
    conn.recv()  # stop
    server.stop()
    store.close()


def _paced(client: httpx.Client, url: str, headers: dict[str, str]) -> list[float]:
    """Latencies (ms) of REQUESTS GETs sent on a 1/RATE_HZ schedule (late sends not bunched)."""
    for _ in range(WARMUP):
        client.get(url, headers=headers).raise_for_status()
    period = 1.0 / RATE_HZ
    latencies = []
    next_at = time.perf_counter()
    for _ in range(REQUESTS):
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        latencies.append((time.perf_counter() - start) * 1000.0)
        response.raise_for_status()
        next_at = max(next_at + period, time.perf_counter())
    return latencies


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def run() -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    with tempfile.TemporaryDirectory(prefix="bench_shop_api_") as workdir:
        server = ctx.Process(target=_serve, args=(child, workdir), daemon=True)
        server.start()
        try:
            if not parent.poll(60.0):
                raise RuntimeError("bench server did not start")
            port, token, order_id = parent.recv()
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=5.0) as client:
                api = _paced(client, f"/api/v1/orders/{order_id}",
                             {"Authorization": f"Bearer {token}"})
                baseline = _paced(client, "/bench/constant", {})
        finally:
            parent.send("stop")
            server.join(10.0)
            if server.is_alive():
                server.terminate()
    return {
        "name": "shop_api",
        "metrics": {
            "api_get_p99_ms": {"value": _p99(api), "unit": "ms",
                               "baseline": round(_p99(baseline), 3),
                               "target": f"<= {TARGET_MS:g}"},
            "api_get_p50_ms": {"value": statistics.median(api), "unit": "ms",
                               "baseline": round(statistics.median(baseline), 3),
                               "target": "info"},
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
