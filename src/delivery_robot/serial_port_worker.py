"""The thread that owns the motor controller's serial port (pyserial; no ROS).

One thread does all port I/O: it waits in select() on the port and on a wake-up pipe, feeds what
it reads to the `MotorControllerLink` and writes what the link queued, with the port in
non-blocking mode. Other threads (ROS executor callbacks) only call `worker.call(...)`, which runs
a short pure function on the link under a lock and wakes the thread; nothing they do can block on
the port. When the port errors, goes silent or disappears (unplugged), the thread closes it and
reopens it by path every `reconnect_period` until it is back, then the link handshakes again.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import serial

from delivery_robot.motor_controller_link import LinkState, MotorControllerLink

_T = TypeVar("_T")
_TX_LIMIT = 4096  # bytes queued for a port that does not take them (about 0.35 s at 115 200 Bd)


class PortLike(Protocol):
    """What the worker needs of a pyserial port: its file descriptor and close()."""

    def fileno(self) -> int: ...

    def close(self) -> None: ...


def open_serial(path: str, baud: int) -> PortLike:
    """8N1, no flow control, non-blocking; `exclusive` so two drivers never share a port."""
    port: PortLike = serial.Serial(
        path, baudrate=baud, timeout=0, write_timeout=0, exclusive=True
    )
    return port


class SerialPortWorker:
    """Runs `link` on the port at `path` in a thread of its own; see the module docstring."""

    def __init__(
        self,
        link: MotorControllerLink,
        path: str,
        baud: int = 115_200,
        *,
        reconnect_period: float = 0.1,
        notify: Callable[[], None] | None = None,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        open_port: Callable[[str, int], PortLike] = open_serial,
    ) -> None:
        if reconnect_period <= 0:
            raise ValueError("reconnect_period must be > 0")
        self.link = link
        self.path = path
        self.baud = baud
        self.reconnect_period = reconnect_period
        self._notify = notify or (lambda: None)
        self._log = log or (lambda _message: None)
        self._clock = clock
        self._open_port = open_port
        self._lock = threading.Lock()  # guards the link; never held across I/O
        self._port: PortLike | None = None
        self._tx = bytearray()  # written as the port accepts it
        self._next_open = -float("inf")
        self._open_error: str | None = None  # last open failure, logged once per kind
        self._silent_reopens = False  # the last session never got an answer: stop logging
        self._closing_deadline: float | None = None
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._thread = threading.Thread(target=self._run, name="serial-port-worker", daemon=True)
        self._error: BaseException | None = None
        self.write_errors = 0
        self.tx_dropped_bytes = 0

    # -- any thread -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        atexit.register(self.close)

    def call(self, function: Callable[[MotorControllerLink, float], _T], wake: bool = True) -> _T:
        """Run `function(link, now)` under the lock (keep it short and pure) and put what it
        queued on the wire at once (`wake=False` for read-only calls).

        "At once" is a non-blocking write from the calling thread when nothing is waiting
        before it: handing the bytes to the worker thread would cost a GIL hand-over (up to the
        5 ms switch interval while the executor thread runs Python). Whatever the port does not
        take now stays queued for the worker, so the caller never waits on the port."""
        with self._lock:
            result = function(self.link, self._clock())
            if wake:
                self._tx += self.link.take_outgoing()
                if self._tx and self._port is not None:
                    self._flush(self._clock(), locked=True)
        if wake and self._tx:
            self._wake()
        return result

    @property
    def connected(self) -> bool:
        return self._port is not None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close_when_idle(self, timeout: float = 1.5) -> None:
        """Finish the outstanding commands (the exit path's disable and lock), then close the
        port and end the thread, at most `timeout` s from now. Does not wait: for executor
        callbacks (lifecycle cleanup / shutdown)."""
        with self._lock:
            deadline = self._clock() + timeout
            if self._closing_deadline is None or deadline < self._closing_deadline:
                self._closing_deadline = deadline
        self._wake()

    def close(self, timeout: float = 1.5) -> None:
        """`close_when_idle`, then wait for the thread (process exit, destroy_node)."""
        atexit.unregister(self.close)
        if self._thread.ident is None:  # never started
            self._release()
            return
        self.close_when_idle(timeout)
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():  # a wedged port: stop waiting for the commands
            self._stopping.set()
            self._wake()
            self._thread.join(2.0)
        if not self._thread.is_alive():
            self._release()

    def __del__(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None and not thread.is_alive():
            self._release()

    # -- the thread -------------------------------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"\0")

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                with self._lock:
                    now = self._clock()  # after the lock: a caller may have held it
                    if self._closing_deadline is not None and (
                        now >= self._closing_deadline
                        or (self.link.pending_commands == 0 and not self._tx)
                        or self._port is None  # nothing more can reach the controller
                    ):
                        break
                    if self._port is not None and self.link.stale(now):
                        self._disconnect(now, "no valid frame within the link timeout")
                    if self._port is None and now >= self._next_open:
                        self._try_open(now)
                    self.link.tick(now)
                    self._tx += self.link.take_outgoing()
                    self._flush(now, locked=True)  # at once: heartbeats are timed from `now`
                    has_events = self.link.has_events
                    deadline = self.link.next_deadline()
                if has_events:
                    self._notify_safely()
                self._wait(deadline)
        except BaseException as error:  # recorded, not lost in a thread
            self._error = error
            self._log(f"serial worker failed: {error!r}")
        finally:
            with self._lock:
                self.link.abort_commands("serial port closed")
                port, self._port = self._port, None
                if port is not None:
                    with contextlib.suppress(Exception):
                        port.close()
                    self.link.on_disconnected(self._clock(), "port closed")
            self._notify_safely()

    def _wait(self, deadline: float) -> None:
        port = self._port
        if port is None:
            deadline = min(deadline, self._next_open)
        if self._closing_deadline is not None:
            deadline = min(deadline, self._closing_deadline)
        # From the clock now, not the loop's `now`: the iteration's work would delay the
        # next velocity frame and heartbeat by its own duration.
        timeout = min(max(0.0, deadline - self._clock()), 1.0)
        readers = [self._wake_read] if port is None else [self._wake_read, port.fileno()]
        writers = [port.fileno()] if port is not None and self._tx else []
        try:
            readable, _, _ = select.select(readers, writers, [], timeout)
        except (OSError, ValueError) as error:  # the fd went bad under us
            with self._lock:
                self._disconnect(self._clock(), f"select failed: {error}")
            return
        if self._wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 4096)
        if port is not None and port.fileno() in readable:
            self._read(port)

    def _read(self, port: PortLike) -> None:
        try:
            data = os.read(port.fileno(), 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            with self._lock:
                self._disconnect(self._clock(), f"read failed: {error.strerror or error}")
            return
        with self._lock:
            if not data:  # readable with nothing to read: the device went away
                self._disconnect(self._clock(), "device disconnected (end of file)")
                return
            self.link.on_bytes(data, self._clock())
            self._tx += self.link.take_outgoing()

    def _flush(self, now: float, locked: bool = False) -> None:
        """Write what the port takes without blocking (O_NONBLOCK); called with the lock held
        when `locked`, else takes it: the buffer is shared with `call`."""
        if not locked:
            with self._lock:
                self._flush(now, locked=True)
            return
        port = self._port
        if port is None or not self._tx:
            return
        try:
            written = os.write(port.fileno(), self._tx)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError as error:
            if error.errno != errno.EAGAIN:
                self.write_errors += 1
                self._disconnect(now, f"write failed: {error.strerror or error}")
                return
            written = 0
        del self._tx[:written]
        if len(self._tx) > _TX_LIMIT:  # the MCU is not reading: queued commands are stale
            self.tx_dropped_bytes += len(self._tx)  # (acked ones are retried from the link)
            self._tx.clear()

    def _try_open(self, now: float) -> None:
        """Called with the lock held; opening a tty is quick (no I/O wait)."""
        self._next_open = now + self.reconnect_period
        if not os.path.exists(self.path):
            self._note_open_error(f"{self.path} does not exist")
            return
        try:
            port = self._open_port(self.path, self.baud)
        except (OSError, ValueError, serial.SerialException) as error:
            self._note_open_error(f"cannot open {self.path}: {error}")
            return
        self._port = port
        self._open_error = None
        self._tx.clear()
        self.link.on_connected(self._clock())
        if not self._silent_reopens:
            self._log(f"opened {self.path} at {self.baud} Bd")

    def _note_open_error(self, message: str) -> None:
        if message != self._open_error:
            self._open_error = message
            self._log(f"{message}; retrying every {self.reconnect_period:g} s")

    def _disconnect(self, now: float, reason: str) -> None:
        """Called with the lock held."""
        port, self._port = self._port, None
        self._tx.clear()
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()
            answered = self.link.state in (LinkState.READY, LinkState.INCOMPATIBLE)
            if self.link.state is not LinkState.DISCONNECTED:
                self.link.on_disconnected(now, reason)
            if not self._silent_reopens:
                suffix = "" if answered else " (further silent reopens are not logged)"
                self._log(f"{self.path}: {reason}; reconnecting{suffix}")
            # A device that opens but never answers would log twice per link timeout forever.
            self._silent_reopens = not answered
        self._next_open = now + self.reconnect_period

    def _notify_safely(self) -> None:
        try:
            self._notify()
        except Exception as error:  # noqa: BLE001 - e.g. the node's guard was destroyed
            self._log(f"notify failed: {error!r}")

    def _release(self) -> None:
        fds = (self._wake_read, self._wake_write)
        self._wake_read = self._wake_write = -1  # first, so no thread writes to a reused fd
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
