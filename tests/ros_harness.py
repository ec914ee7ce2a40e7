"""Fixtures and helpers for tests that use real rclpy.

- `claim_domain_id()`: a ROS_DOMAIN_ID no other test process on this machine holds (a file
  lock per id), so parallel runs never see each other's nodes.
- `ros_context`: an rclpy context of the test's own, shut down afterwards.
- `ros_executor`: a SingleThreadedExecutor spinning in a background thread; add nodes to it.
- `wait_for(predicate, timeout, what)`: wait on a condition instead of sleeping.
- `ros_peer`: start a Python script as a separate process in the same ROS environment.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

# Domain ids 1..100 keep Fast DDS's ports (7400 + 250 * id + offsets) below the ephemeral range.
_DOMAIN_IDS = range(1, 101)
_held_lock: IO[str] | None = None


def claim_domain_id() -> int:
    """Hold an exclusive lock on one domain id for the lifetime of this process."""
    global _held_lock
    lock_dir = Path(tempfile.gettempdir()) / "delivery_robot_ros_domains"
    lock_dir.mkdir(exist_ok=True)
    start = os.getpid() % len(_DOMAIN_IDS)
    for offset in range(len(_DOMAIN_IDS)):
        domain_id = _DOMAIN_IDS[(start + offset) % len(_DOMAIN_IDS)]
        handle = open(lock_dir / f"{domain_id}.lock", "w")  # noqa: SIM115 - held until exit
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_lock = handle
        return domain_id
    raise RuntimeError(f"all ROS domain ids {_DOMAIN_IDS} are held by other test processes")


def wait_for(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll `predicate` until it is true; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}")
        event.wait(0.01)


def _ros_context() -> Iterator[Any]:
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


@pytest.fixture
def ros_context() -> Iterator[Any]:
    """An rclpy context of the test's own (one DDS participant), shut down afterwards."""
    yield from _ros_context()


class SpinningExecutor:
    """A SingleThreadedExecutor spun by a background thread, so tests can wait on conditions."""

    def __init__(self, context: Any) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.context = context
        self.executor = SingleThreadedExecutor(context=context)
        self._nodes: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="ros-executor", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok() and not self._stop.is_set():
                self.executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass

    def node(self, name: str, **kwargs: Any) -> Any:
        """Create a node in the test's context and spin it."""
        from rclpy.node import Node

        node = Node(name, context=self.context, **kwargs)
        return self.add(node)

    def add(self, node: Any) -> Any:
        self.executor.add_node(node)
        self._nodes.append(node)
        return node

    def close(self) -> None:
        """Stop spinning first, so no wait is in progress when the context shuts down."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        for node in self._nodes:
            self.executor.remove_node(node)
            node.destroy_node()
        self.executor.shutdown(timeout_sec=1.0)


@pytest.fixture
def ros_executor(ros_context: Any) -> Iterator[SpinningExecutor]:
    spinning = SpinningExecutor(ros_context)
    try:
        yield spinning
    finally:
        spinning.close()


@pytest.fixture(scope="module")
def ros_module_executor() -> Iterator[SpinningExecutor]:
    """One context and executor shared by a module's tests: DDS discovery happens once."""
    for context in _ros_context():
        spinning = SpinningExecutor(context)
        try:
            yield spinning
        finally:
            spinning.close()


class PeerProcess:
    """A Python script run as a separate process in this test's ROS environment."""

    def __init__(self, script: Path, *args: str) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="ros_peer_", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            text=True,
        )

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, marker: str = "READY", timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"peer exited with {self.process.returncode}:\n{self.output()}")
            return marker in self.output()

        wait_for(ready, timeout, f"peer to print {marker!r}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture
def ros_peer() -> Iterator[Callable[..., PeerProcess]]:
    started: list[PeerProcess] = []

    def start(script: Path, *args: str) -> PeerProcess:
        peer = PeerProcess(script, *args)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()
