"""Run the API's uvicorn server on a background thread of the coordinator's process.

A thread (not a process) because the handlers call the same `FleetCoordinator` object; uvicorn
leaves signal handling to the main thread when it runs elsewhere, so Ctrl-C still reaches
rclpy. `stop()` asks the server to finish its open requests and joins the thread.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int, *, log_level: str = "warning") -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                access_log=False, lifespan="off", ws="websockets-sansio",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="shop-api", daemon=True)

    def start(self, timeout_s: float = 5.0) -> None:
        """Start serving; raise if the port could not be bound within `timeout_s`."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("shop API server did not start (port in use?)")
            time.sleep(0.01)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self._server.config.port)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
