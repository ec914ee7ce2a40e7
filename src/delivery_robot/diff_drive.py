"""Differential-drive kinematics and wheel-encoder odometry (REP-103 units, REP-105 frames).

Pure maths, shared by the base driver (encoder reports from the motor controller) and anything
else that turns (v, w) into wheel speeds or ticks into a pose. Conventions:
- body twist: `linear` m/s along base_link x, `angular` rad/s about z (counter-clockwise +);
- wheel speeds: rad/s, positive drives the robot forward on both sides;
- the pose is the pose of base_link in the odom frame, integrated from the first report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

_U32: Final = 1 << 32
_I32: Final = 1 << 32  # encoder counters are int32 on the wire: differences are taken mod 2**32


def _signed_delta(new: int, old: int, modulo: int) -> int:
    """new - old for a counter that wraps at `modulo`, read as the shortest signed step."""
    delta = (new - old) % modulo
    return delta - modulo if delta >= modulo // 2 else delta


@dataclass(frozen=True)
class DiffDriveGeometry:
    """Wheel radius and track from config; `max_wheel_speed` is what the motors can do."""

    wheel_radius: float  # m
    track_width: float  # m, distance between the wheel contact points
    ticks_per_rev: int  # encoder counts per wheel revolution
    max_wheel_speed: float = math.inf  # rad/s

    def __post_init__(self) -> None:
        for name in ("wheel_radius", "track_width", "max_wheel_speed"):
            value = getattr(self, name)
            if not value > 0 or math.isnan(value):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not math.isfinite(self.wheel_radius) or not math.isfinite(self.track_width):
            raise ValueError("wheel_radius and track_width must be finite")
        if self.ticks_per_rev <= 0:
            raise ValueError(f"ticks_per_rev must be > 0, got {self.ticks_per_rev}")

    @property
    def metres_per_tick(self) -> float:
        return 2.0 * math.pi * self.wheel_radius / self.ticks_per_rev

    def wheel_speeds(self, linear: float, angular: float) -> tuple[float, float]:
        """(v, w) -> (left, right) wheel rad/s. Beyond `max_wheel_speed` both wheels are scaled
        by the same factor, so the robot slows down along the commanded arc instead of
        straightening or tightening it (which clipping one wheel would do)."""
        if not (math.isfinite(linear) and math.isfinite(angular)):
            raise ValueError(f"twist must be finite, got ({linear!r}, {angular!r})")
        half_track = self.track_width / 2.0
        left = (linear - angular * half_track) / self.wheel_radius
        right = (linear + angular * half_track) / self.wheel_radius
        fastest = max(abs(left), abs(right))
        if fastest > self.max_wheel_speed:
            scale = self.max_wheel_speed / fastest
            left, right = left * scale, right * scale
        return left, right

    def body_twist(self, left: float, right: float) -> tuple[float, float]:
        """(left, right) wheel rad/s -> (v m/s, w rad/s); the inverse of `wheel_speeds`."""
        v_left, v_right = left * self.wheel_radius, right * self.wheel_radius
        return (v_left + v_right) / 2.0, (v_right - v_left) / self.track_width


@dataclass(frozen=True)
class OdometryEstimate:
    """base_link in odom (pose) and its velocity in base_link (twist), at one MCU instant."""

    x: float  # m
    y: float  # m
    yaw: float  # rad, in (-pi, pi]
    linear: float  # m/s, along base_link x
    angular: float  # rad/s
    distance: float  # m travelled by the robot's centre since the first report (odometer)
    mcu_time_us: int  # MCU clock of the encoder sample


def integrate_arc(
    x: float, y: float, yaw: float, distance: float, rotation: float
) -> tuple[float, float, float]:
    """Move a pose along a circular arc of length `distance` turning by `rotation`.

    Exact for constant wheel speeds over the step (which the encoder period nearly is), so
    the pose does not drift with the sampling rate as Euler steps would."""
    if abs(rotation) < 1e-9:
        heading = yaw + rotation / 2.0
        x += distance * math.cos(heading)
        y += distance * math.sin(heading)
    else:
        radius = distance / rotation
        x += radius * (math.sin(yaw + rotation) - math.sin(yaw))
        y -= radius * (math.cos(yaw + rotation) - math.cos(yaw))
    return x, y, normalize_angle(yaw + rotation)


def normalize_angle(angle: float) -> float:
    """Angle in (-pi, pi]."""
    wrapped = math.remainder(angle, 2.0 * math.pi)
    return math.pi if wrapped == -math.pi else wrapped


class OdometryIntegrator:
    """Pose and twist from cumulative encoder counts stamped with the MCU's clock.

    Differences are modular (int32 ticks, uint32 microseconds), which is exact across wraps.
    The MCU timestamp, not the host's receive time, divides distance into velocity, so serial
    jitter does not become velocity noise. A step that is physically impossible (a counter or
    clock jump: the MCU rebooted) re-baselines instead of teleporting the pose; `resets` counts
    those for diagnostics.
    """

    def __init__(self, geometry: DiffDriveGeometry, plausibility_margin: float = 2.0) -> None:
        self.geometry = geometry
        self.x = self.y = self.yaw = 0.0
        self.linear = self.angular = 0.0
        self.distance = 0.0
        self.resets = 0
        self._previous: tuple[int, int, int] | None = None  # time_us, left, right
        # Most ticks a wheel can turn per second, with margin; beyond it a step is a reset.
        speed = geometry.max_wheel_speed if math.isfinite(geometry.max_wheel_speed) else 200.0
        self._max_ticks_per_s = speed * plausibility_margin * geometry.ticks_per_rev / math.tau

    def rebaseline(self) -> None:
        """Forget the last sample (after a reconnect): the next report only sets a baseline."""
        self._previous = None
        self.linear = self.angular = 0.0

    def update(self, mcu_time_us: int, left_ticks: int, right_ticks: int) -> OdometryEstimate:
        sample = (mcu_time_us % _U32, left_ticks, right_ticks)
        previous, self._previous = self._previous, sample
        if previous is not None:
            dt_us = _signed_delta(sample[0], previous[0], _U32)
            d_left = _signed_delta(sample[1], previous[1], _I32)
            d_right = _signed_delta(sample[2], previous[2], _I32)
            limit = self._max_ticks_per_s * max(dt_us, 20_000) / 1e6 + 2
            if dt_us < 0 or abs(d_left) > limit or abs(d_right) > limit:
                self.resets += 1  # the MCU restarted: its counters are a new baseline
                self.linear = self.angular = 0.0
            elif dt_us > 0:
                self._step(d_left, d_right, dt_us / 1e6)
            # dt_us == 0: the same sample twice (a requested report); nothing moved.
        return self.estimate()

    def _step(self, d_left: int, d_right: int, dt: float) -> None:
        per_tick = self.geometry.metres_per_tick
        left, right = d_left * per_tick, d_right * per_tick
        distance = (left + right) / 2.0
        rotation = (right - left) / self.geometry.track_width
        self.x, self.y, self.yaw = integrate_arc(self.x, self.y, self.yaw, distance, rotation)
        self.distance += abs(distance)
        self.linear, self.angular = distance / dt, rotation / dt

    def estimate(self) -> OdometryEstimate:
        time_us = 0 if self._previous is None else self._previous[0]
        return OdometryEstimate(
            self.x, self.y, self.yaw, self.linear, self.angular, self.distance, time_us
        )
