"""Obstacle tracking from the laser scan: clusters with a track id, position and velocity.

Pure numpy core (no rclpy) for the safety monitor. Per scan:
1. the scan becomes points in base_link (`safety_gate.scan_to_base_points`, same conventions);
2. consecutive beams are split into clusters where neighbouring points are further apart than
   a range-dependent gap (one vectorised pass, no per-point Python loop);
3. cluster centroids go into the fixed frame (odom/map) with the robot pose at scan time, so
   the robot's own motion is not mistaken for obstacle motion;
4. clusters are associated to tracks by gated nearest neighbour (greedy on the distance
   matrix) and each track runs an alpha-beta (constant velocity) filter.

Clusters wider than `max_cluster_radius` (walls, parked cars) are reported but not tracked:
their visible part, hence their centroid, slides as the robot moves, which would look like
motion. The centroid of the visible points sits slightly towards the scanner from an object's
true centre; the bias changes only with the viewing angle, so velocity estimates stay small
for static objects (see the tests).

`TrackingResult.point_velocities_base()` gives every beam its track's velocity in base_link
axes, which `SafetyGate.update_scan(..., point_velocities=...)` uses for approach mode when
`approach_use_obstacle_velocity` is set.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from delivery_robot.safety_gate import (
    BoolArray,
    FloatArray,
    IndexArray,
    LaserScanData,
    Pose2D,
    scan_to_base_points,
)

PARAM_PREFIX = "tracking_"


class TrackerConfigError(ValueError):
    """A tracking parameter is missing, of the wrong type or out of range (names the key)."""


@dataclass(frozen=True)
class TrackerConfig:
    """Clustering and tracking parameters (m, s); ROS parameter names add `tracking_`."""

    cluster_distance: float = 0.2  # smallest gap that splits two clusters, m
    cluster_gap_beams: float = 3.0  # ... or this many beam spacings at that range, if wider
    min_cluster_points: int = 3
    max_cluster_radius: float = 1.0  # wider clusters are structure, not tracked
    gate_distance: float = 0.8  # max distance prediction -> measurement to associate, m
    alpha: float = 0.5
    beta: float = 0.2
    max_missed: int = 5  # scans a track may go unseen before it is dropped
    min_hits_for_velocity: int = 3  # velocity reported only after this many updates

    def __post_init__(self) -> None:
        for name in ("cluster_distance", "max_cluster_radius", "gate_distance"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise TrackerConfigError(f"{PARAM_PREFIX}{name}: must be > 0, got {value}")
        if not (math.isfinite(self.cluster_gap_beams) and self.cluster_gap_beams >= 0.0):
            raise TrackerConfigError(f"{PARAM_PREFIX}cluster_gap_beams: must be >= 0")
        if not 0.0 < self.alpha <= 1.0:
            raise TrackerConfigError(f"{PARAM_PREFIX}alpha: must be in (0, 1], got {self.alpha}")
        if not 0.0 < self.beta < 2.0:
            raise TrackerConfigError(f"{PARAM_PREFIX}beta: must be in (0, 2), got {self.beta}")
        for name in ("min_cluster_points", "min_hits_for_velocity"):
            if getattr(self, name) < 1:
                raise TrackerConfigError(f"{PARAM_PREFIX}{name}: must be >= 1")
        if self.max_missed < 0:
            raise TrackerConfigError(f"{PARAM_PREFIX}max_missed: must be >= 0")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrackerConfig:
        """Build from the node's flat parameters: the `tracking_*` keys, others ignored."""
        types = {f.name: f.type for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in params.items():
            if not key.startswith(PARAM_PREFIX):
                continue
            name = key[len(PARAM_PREFIX) :]
            if name not in types:
                known = ", ".join(PARAM_PREFIX + n for n in sorted(types))
                raise TrackerConfigError(f"unknown tracking parameter {key}; known: {known}")
            if isinstance(value, bool):
                raise TrackerConfigError(f"{key}: expected a number, got {value!r}")
            if types[name] == "int":
                if not isinstance(value, numbers.Integral):
                    raise TrackerConfigError(f"{key}: expected an integer, got {value!r}")
                kwargs[name] = int(value)
            else:
                if not isinstance(value, numbers.Real):
                    raise TrackerConfigError(f"{key}: expected a number, got {value!r}")
                kwargs[name] = float(value)
        return cls(**kwargs)


@dataclass(frozen=True)
class ScanClusters:
    """Clusters of one scan. `beam_labels[i]` is beam i's cluster index, -1 if in none."""

    beam_labels: IndexArray
    centroids: FloatArray  # (C, 2) in base_link
    radii: FloatArray  # (C,) largest distance of a member point from the centroid
    counts: IndexArray  # (C,)


def cluster_scan(
    points: FloatArray,
    valid: BoolArray,
    ranges: FloatArray,
    angle_increment: float,
    config: TrackerConfig,
) -> ScanClusters:
    """Split the valid beams into clusters where neighbouring points jump apart.

    A gap splits when it is wider than both `cluster_distance` and `cluster_gap_beams` beam
    spacings at the nearer range (far points are naturally sparser). A full-circle scan joins
    its last and first clusters when they touch. Clusters with fewer than
    `min_cluster_points` points are dropped (noise).
    """
    n = valid.size
    beam_labels = np.full(n, -1, dtype=np.intp)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        empty = np.zeros((0, 2))
        return ScanClusters(beam_labels, empty, np.zeros(0), np.zeros(0, dtype=np.intp))
    p = points[idx]
    r = np.where(np.isfinite(ranges[idx]), ranges[idx], 0.0)
    gaps = np.hypot(np.diff(p[:, 0]), np.diff(p[:, 1]))
    spacing = config.cluster_gap_beams * np.minimum(r[:-1], r[1:]) * abs(angle_increment)
    split = gaps > np.maximum(config.cluster_distance, spacing)
    labels = np.concatenate(([0], np.cumsum(split))).astype(np.intp)
    full_circle = abs(angle_increment) * n >= 2 * math.pi - 1.5 * abs(angle_increment)
    if full_circle and labels[-1] > 0:
        wrap_gap = float(np.hypot(*(p[-1] - p[0])))
        wrap_spacing = config.cluster_gap_beams * min(r[-1], r[0]) * abs(angle_increment)
        if wrap_gap <= max(config.cluster_distance, wrap_spacing):
            labels[labels == labels[-1]] = 0
    counts_all = np.bincount(labels)
    keep = counts_all >= config.min_cluster_points
    # Renumber the kept clusters 0..C-1, in scan order.
    new_index = np.cumsum(keep) - 1
    point_labels = np.where(keep[labels], new_index[labels], -1)
    kept = point_labels >= 0
    labels_kept = point_labels[kept]
    pk = p[kept]
    counts = np.bincount(labels_kept, minlength=int(keep.sum())).astype(np.intp)
    if counts.size == 0:
        return ScanClusters(beam_labels, np.zeros((0, 2)), np.zeros(0), counts)
    cx = np.bincount(labels_kept, weights=pk[:, 0]) / counts
    cy = np.bincount(labels_kept, weights=pk[:, 1]) / counts
    dist = np.hypot(pk[:, 0] - cx[labels_kept], pk[:, 1] - cy[labels_kept])
    radii = np.zeros(counts.size)
    np.maximum.at(radii, labels_kept, dist)
    beam_labels[idx] = point_labels
    return ScanClusters(beam_labels, np.column_stack((cx, cy)), radii, counts)


@dataclass(frozen=True)
class Track:
    """A tracked obstacle in the fixed frame: position m, velocity m/s, radius m."""

    track_id: int
    position: tuple[float, float]
    velocity: tuple[float, float]
    radius: float
    hits: int  # measurement updates so far
    missed: int  # scans since the last update (0: seen in this scan)

    @property
    def speed(self) -> float:
        return math.hypot(*self.velocity)


@dataclass(frozen=True)
class TrackingResult:
    """One scan's clusters and the tracks after the update.

    `cluster_track_ids[c]` is the track of cluster c, or -1 for untracked (wide) clusters.
    """

    stamp: float
    robot_pose: Pose2D
    clusters: ScanClusters
    cluster_track_ids: tuple[int, ...]
    tracks: tuple[Track, ...]
    min_hits_for_velocity: int

    def track(self, track_id: int) -> Track | None:
        return next((t for t in self.tracks if t.track_id == track_id), None)

    def point_velocities_base(self) -> FloatArray:
        """Per beam (N, 2): its track's velocity (m/s) in base_link axes, zero if none yet."""
        labels = self.clusters.beam_labels
        by_id = {t.track_id: t for t in self.tracks}
        cluster_vel = np.zeros((len(self.cluster_track_ids) + 1, 2))  # last row: no cluster
        for c, tid in enumerate(self.cluster_track_ids):  # one entry per cluster
            track = by_id.get(tid)
            if track is not None and track.hits >= self.min_hits_for_velocity:
                cluster_vel[c] = track.velocity
        cy, sy = math.cos(self.robot_pose.yaw), math.sin(self.robot_pose.yaw)
        world = cluster_vel[np.where(labels >= 0, labels, len(self.cluster_track_ids))]
        return np.column_stack(
            (cy * world[:, 0] + sy * world[:, 1], -sy * world[:, 0] + cy * world[:, 1])
        )


@dataclass
class _TrackState:
    track_id: int
    position: FloatArray
    velocity: FloatArray
    radius: float
    hits: int = 1
    missed: int = 0


class ObstacleTracker:
    """Clusters each scan and keeps tracks across scans (nearest neighbour + alpha-beta)."""

    def __init__(self, config: TrackerConfig | None = None, laser_pose: Pose2D | None = None):
        self.config = config or TrackerConfig()
        self.laser_pose = laser_pose or Pose2D()
        self._tracks: list[_TrackState] = []
        self._next_id = 1
        self._last_stamp: float | None = None

    def reset(self) -> None:
        self._tracks = []
        self._last_stamp = None

    def update(self, scan: LaserScanData, robot_pose: Pose2D) -> TrackingResult:
        """Take a scan with the robot's fixed-frame pose at the scan's stamp."""
        cfg = self.config
        mount = scan.mount if scan.mount is not None else self.laser_pose
        points, valid = scan_to_base_points(scan, mount)
        ranges = np.asarray(scan.ranges, dtype=np.float64).ravel()
        clusters = cluster_scan(points, valid, ranges, float(scan.angle_increment), cfg)

        cy, sy = math.cos(robot_pose.yaw), math.sin(robot_pose.yaw)
        c = clusters.centroids
        world = np.column_stack(
            (robot_pose.x + cy * c[:, 0] - sy * c[:, 1], robot_pose.y + sy * c[:, 0] + cy * c[:, 1])
        )
        trackable = np.flatnonzero(clusters.radii <= cfg.max_cluster_radius)

        dt = 0.0 if self._last_stamp is None else float(scan.stamp) - self._last_stamp
        if dt < 0.0:  # clock jumped back (e.g. simulation restart): start over
            self.reset()
            dt = 0.0
        self._last_stamp = float(scan.stamp)

        predicted = np.array([t.position + t.velocity * dt for t in self._tracks]).reshape(-1, 2)
        pairs = self._associate(predicted, world[trackable])

        cluster_track_ids = [-1] * c.shape[0]
        matched_tracks: set[int] = set()
        for ti, mi in pairs:
            track = self._tracks[ti]
            ci = int(trackable[mi])
            z = world[ci]
            if track.hits == 1 and dt > 0.0:
                # Second sighting: two-point velocity, then the filter takes over.
                track.velocity = (z - track.position) / dt
                track.position = z.copy()
            else:
                residual = z - predicted[ti]
                track.position = predicted[ti] + cfg.alpha * residual
                if dt > 0.0:
                    track.velocity = track.velocity + (cfg.beta / dt) * residual
            track.radius = float(clusters.radii[ci])
            track.hits += 1
            track.missed = 0
            matched_tracks.add(ti)
            cluster_track_ids[ci] = track.track_id

        survivors: list[_TrackState] = []
        for ti, track in enumerate(self._tracks):
            if ti not in matched_tracks:
                track.position = predicted[ti].copy()
                track.missed += 1
                if track.missed > cfg.max_missed:
                    continue
            survivors.append(track)
        matched_clusters = {int(trackable[mi]) for _, mi in pairs}
        for ci in trackable.tolist():
            if ci in matched_clusters:
                continue
            track = _TrackState(
                track_id=self._next_id,
                position=world[ci].copy(),
                velocity=np.zeros(2),
                radius=float(clusters.radii[ci]),
            )
            self._next_id += 1
            survivors.append(track)
            cluster_track_ids[ci] = track.track_id
        self._tracks = survivors

        tracks = tuple(
            Track(
                track_id=t.track_id,
                position=(float(t.position[0]), float(t.position[1])),
                velocity=(float(t.velocity[0]), float(t.velocity[1])),
                radius=t.radius,
                hits=t.hits,
                missed=t.missed,
            )
            for t in self._tracks
        )
        return TrackingResult(
            stamp=float(scan.stamp),
            robot_pose=robot_pose,
            clusters=clusters,
            cluster_track_ids=tuple(cluster_track_ids),
            tracks=tracks,
            min_hits_for_velocity=cfg.min_hits_for_velocity,
        )

    def _associate(self, predicted: FloatArray, measured: FloatArray) -> list[tuple[int, int]]:
        """Greedy nearest-neighbour pairs (track, measurement) within the gate distance."""
        if predicted.shape[0] == 0 or measured.shape[0] == 0:
            return []
        cost = np.hypot(
            predicted[:, None, 0] - measured[None, :, 0],
            predicted[:, None, 1] - measured[None, :, 1],
        )
        order = np.argsort(cost, axis=None)
        rows, cols = np.unravel_index(order, cost.shape)
        within = cost[rows, cols] <= self.config.gate_distance
        used_t: set[int] = set()
        used_m: set[int] = set()
        pairs: list[tuple[int, int]] = []
        for ti, mi in zip(rows[within].tolist(), cols[within].tolist(), strict=True):
            if ti in used_t or mi in used_m:
                continue
            used_t.add(ti)
            used_m.add(mi)
            pairs.append((ti, mi))
        return pairs
