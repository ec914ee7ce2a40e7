"""2D lidar by ray casting against line segments and circles, for the headless simulator.

A simulated fleet scans ~10 robots x 360 beams ten times a simulated second against a few
hundred wall segments, tree and bollard circles, the other robots and pedestrians. A per-ray
Python loop takes about a third of a second per fleet scan; `Raycaster.cast` takes well under
a millisecond, with numpy and no per-ray Python loop, all sensors in one go, in two phases:

1. broad phase, one array over (sensor, shape) entries within reach: the angular interval each
   shape covers as seen from the sensor;
2. narrow phase, one array over the (entry, beam) pairs inside those intervals: the exact
   ray/segment and ray/circle intersections, reduced to the nearest hit per beam.

The geometry is exact; pruning only skips pairs that cannot intersect (intervals are widened
by 1e-7 of a beam, far more than atan2 rounds, so a grazing hit is never dropped).
`raycast_dense` tests every ray against every shape in one broadcast, and `raycast_reference`
is a deliberately plain per-ray loop; they use the same intersection formulas and serve as
cross-checks (tests) and baselines (bench/bench_fleet_simulation.py).

Conventions (REP-117 is applied by the caller): angles in radians, counter-clockwise; beam k of
a sensor with yaw `yaw` points at `yaw + angle_min + k * angle_increment` in the frame of the
origins; a hit is the smallest distance t >= 0 along the ray; no hit within `range_max` is
+inf. A ray starting inside a circle hits where it leaves the circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

TWO_PI = 2.0 * math.pi
_OUTSIDE = 1.0 + 1e-9  # a sensor this far out of a circle (relative) is surely outside


@dataclass(frozen=True)
class BeamPattern:
    """Evenly spaced beams in the sensor frame, as a sensor_msgs/LaserScan describes them."""

    angle_min: float
    angle_increment: float
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not self.angle_increment > 0.0:
            raise ValueError("a beam pattern needs count >= 1 and angle_increment > 0")
        if (self.count - 1) * self.angle_increment >= TWO_PI:
            raise ValueError("beams overlap: (count - 1) * angle_increment must be < 2 pi")

    @classmethod
    def centred(cls, count: int, fov: float = TWO_PI) -> BeamPattern:
        """`count` beams centred on the sensor's x axis; a full circle does not repeat -pi."""
        if not 0.0 < fov <= TWO_PI:
            raise ValueError(f"fov {fov} must be in (0, 2 pi]")
        full = fov >= TWO_PI - 1e-12
        increment = fov / count if full or count == 1 else fov / (count - 1)
        return cls(angle_min=-fov / 2.0, angle_increment=increment, count=count)

    @property
    def full_circle(self) -> bool:
        """The beams go all the way round (count * increment = 2 pi): indices wrap."""
        return abs(self.count * self.angle_increment - TWO_PI) < 1e-9

    @property
    def angle_max(self) -> float:
        return self.angle_min + (self.count - 1) * self.angle_increment

    def angles(self) -> FloatArray:
        """The beam angles in the sensor frame (the same array every implementation uses)."""
        out: FloatArray = self.angle_min + np.arange(self.count, dtype=np.float64) * (
            self.angle_increment)
        return out


class Raycaster:
    """A static scene and a beam pattern, prepared once; `cast` scans many sensors at once.

    `segments` (S, 4) rows x1, y1, x2, y2 and `circles` (C, 3) rows cx, cy, r are the static
    shapes; moving ones (robots, people) are passed to each cast. `one_sided`: the segments
    are edges of counter-clockwise closed polygons (as `WorldGeometry.segments`), so an edge
    facing away from a sensor is skipped: exact whenever no sensor is inside a polygon, and it
    halves the work. Points and directions are complex numbers inside (x + iy): at a fleet's
    size numpy's per-call overhead is most of the cost, and a complex operation does a 2D
    vector operation in one call.
    """

    def __init__(
        self,
        beams: BeamPattern,
        segments: FloatArray,
        circles: FloatArray,
        range_max: float,
        *,
        one_sided: bool = False,
    ) -> None:
        if not range_max > 0.0:
            raise ValueError(f"range_max must be > 0, got {range_max}")
        self.beams = beams
        self.range_max = range_max
        self.one_sided = one_sided
        seg = np.asarray(segments, dtype=np.float64).reshape(-1, 4)
        self._q1 = seg[:, 0] + 1j * seg[:, 1]  # first ends
        self._edge = (seg[:, 2] + 1j * seg[:, 3]) - self._q1
        # Bounding circles grown by range_max: a sensor outside one never sees the segment.
        self._mid = self._q1 + 0.5 * self._edge
        self._reach = 0.5 * np.abs(self._edge) + range_max
        length_sq = np.abs(self._edge) ** 2
        self._neg_inv_len_sq = -1.0 / np.where(length_sq > 0.0, length_sq, 1.0)
        circ = np.asarray(circles, dtype=np.float64).reshape(-1, 3)
        self._centres = circ[:, 0] + 1j * circ[:, 1]
        self._radii = circ[:, 2].copy()
        angles = beams.angles()
        self._table = np.cos(angles) + 1j * np.sin(angles)  # beam directions, sensor frame

    def cast(
        self,
        origins: FloatArray,
        yaws: FloatArray,
        circles: FloatArray | None = None,
        exclude_circle: IntArray | None = None,
    ) -> FloatArray:
        """Nearest hit per beam, (R, beams.count), +inf where none within range_max.

        origins (R, 2) and yaws (R,) are the sensor poses; `circles` (D, 3) are extra moving
        circles for this cast; `exclude_circle[i]` is the one of them sensor i does not see
        (its own robot), or -1.
        """
        o = np.asarray(origins, dtype=np.float64).reshape(-1, 2)
        yaw = np.asarray(yaws, dtype=np.float64).reshape(-1)
        if len(o) != len(yaw):
            raise ValueError(f"{len(o)} origins but {len(yaw)} yaws")
        extra = np.zeros((0, 3)) if circles is None else np.asarray(circles, np.float64)
        extra = extra.reshape(-1, 3)
        return self.cast_complex(
            o[:, 0] + 1j * o[:, 1], yaw, extra[:, 0] + 1j * extra[:, 1], extra[:, 2],
            None if exclude_circle is None else np.asarray(exclude_circle, dtype=np.int64),
        )

    def cast_complex(
        self,
        origins: ComplexArray,
        yaws: FloatArray,
        centres: ComplexArray | None = None,
        radii: FloatArray | None = None,
        exclude: IntArray | None = None,
    ) -> FloatArray:
        """`cast` for callers that keep positions as complex numbers (the simulator)."""
        p = origins
        n_sensors, n_beams = len(p), self.beams.count
        out = np.full(n_sensors * n_beams, np.inf)
        if not n_sensors:
            return out.reshape(0, n_beams)
        # Work in each sensor's own frame: turning the few hundred (sensor, shape) vectors is
        # cheaper than turning every beam, and beam k's direction is then just table[k].
        unturn = np.exp(-1j * yaws)
        table = self._table
        with np.errstate(divide="ignore", invalid="ignore"):
            # Broad phase, segments: (sensor, segment) entries within reach, and the angular
            # interval [start, start + width] each covers (sensor frame).
            s_sensor, s_shape = np.nonzero(np.abs(self._mid - p[:, None]) <= self._reach)
            turn_s = unturn[s_sensor]
            w = (self._q1[s_shape] - p[s_sensor]) * turn_s  # first end, seen from the sensor
            edge = self._edge[s_shape] * turn_s
            w_conj = w.conjugate()
            w_e = w_conj * edge
            cross = w_e.imag  # wx * ey - wy * ex; < 0: the sensor is on the outer side
            # Exact distance to the segment: a long wall's bounding circle reaches far.
            foot = np.minimum(np.maximum(w_e.real * self._neg_inv_len_sq[s_shape], 0.0), 1.0)
            keep = np.abs(w + foot * edge) <= self.range_max
            if self.one_sided:
                keep &= cross < 0.0
            turn_z = (w + edge) * w_conj
            turn = np.arctan2(turn_z.imag, turn_z.real)  # signed angle, first -> second end
            s_start = np.arctan2(w.imag, w.real) + np.minimum(turn, 0.0)
            s_width = np.abs(turn)
            # Broad phase, circles: the interval is the centre's direction +- asin(r / d).
            c_all, r_all = self._centres, self._radii
            if centres is not None and radii is not None and len(centres):
                c_all = np.concatenate([c_all, centres])
                r_all = np.concatenate([r_all, radii])
            dist = np.abs(c_all - p[:, None])
            near = dist <= r_all + self.range_max
            if exclude is not None:
                mine = np.flatnonzero(exclude >= 0)
                near[mine, exclude[mine] + len(self._centres)] = False
            c_sensor, c_shape = np.nonzero(near)
            g = (c_all[c_shape] - p[c_sensor]) * unturn[c_sensor]  # sensor -> centre
            d, r = dist[c_sensor, c_shape], r_all[c_shape]
            q = (g * g.conjugate()).real - r * r  # < 0: the sensor is inside the circle
            # Inside, or too close to tell: the whole circle of beams is a candidate.
            half = np.where(d > r * _OUTSIDE, np.arcsin(r / d), math.pi)
            c_start = np.arctan2(g.imag, g.real) - half

            n_seg = len(s_sensor)
            entry, beam, n_seg_pairs = _candidate_beams(
                np.concatenate([s_start, c_start]), np.concatenate([s_width, 2.0 * half]),
                keep, n_seg, self.beams,
            )
            flat = np.concatenate([s_sensor, c_sensor])[entry] * n_beams + beam
            s_pairs: IntArray | slice
            c_pairs: IntArray | slice
            if n_seg_pairs is None:  # pairs of both kinds interleaved (a partial field of view)
                is_seg = entry < n_seg
                s_pairs, c_pairs = np.flatnonzero(is_seg), np.flatnonzero(~is_seg)
            else:
                s_pairs, c_pairs = slice(0, n_seg_pairs), slice(n_seg_pairs, None)

            # Narrow phase, segments: p + t d = q1 + u e, t = (w x e) / (d x e),
            # u = (w x d) / (d x e); a hit needs t >= 0 and 0 <= u <= 1.
            e, f = entry[s_pairs], flat[s_pairs]
            d_s = table[beam[s_pairs]]
            denom = (d_s.conjugate() * edge[e]).imag
            t_s = cross[e] / denom
            u = (w_conj[e] * d_s).imag / denom
            hit_s = (t_s >= 0.0) & (u >= 0.0) & (u <= 1.0)  # False for 0/0 and x/0
            # Narrow phase, circles: the smallest t >= 0 with |t d - g| = r,
            # t = b -+ sqrt(b^2 - q) with b = g . d.
            e, f_c = entry[c_pairs] - n_seg, flat[c_pairs]
            b = (g[e].conjugate() * table[beam[c_pairs]]).real
            root = np.sqrt(b * b - q[e])
            t_c = np.where(b >= root, b - root, b + root)
            hit_c = t_c >= 0.0  # False for NaN: the ray misses the circle
        np.minimum.at(out, np.concatenate([f[hit_s], f_c[hit_c]]),
                      np.concatenate([t_s[hit_s], t_c[hit_c]]))
        out[out > self.range_max] = np.inf
        return out.reshape(n_sensors, n_beams)


def raycast(
    origins: FloatArray,
    yaws: FloatArray,
    beams: BeamPattern,
    segments: FloatArray,
    circles: FloatArray,
    range_max: float,
    exclude_circle: IntArray | None = None,
    *,
    one_sided: bool = False,
) -> FloatArray:
    """Nearest hit per beam for R sensors at once: (R, beams.count), +inf where none.

    origins (R, 2) and yaws (R,) are the sensor poses; segments (S, 4) rows x1, y1, x2, y2;
    circles (C, 3) rows cx, cy, r; `exclude_circle[i]` is a circle sensor i does not see
    (its own robot), or -1. A one-off `Raycaster`; keep one to cast many times.
    """
    caster = Raycaster(beams, segments, np.zeros((0, 3)), range_max, one_sided=one_sided)
    return caster.cast(origins, yaws, circles, exclude_circle)


def raycast_dense(
    origins: FloatArray,
    yaws: FloatArray,
    beams: BeamPattern,
    segments: FloatArray,
    circles: FloatArray,
    range_max: float,
    exclude_circle: IntArray | None = None,
) -> FloatArray:
    """Same result as `raycast`, by testing every ray against every shape in one broadcast.

    Simple and still loop-free, but its cost grows with rays x shapes; kept as a cross-check
    and to show what the broad phase of `raycast` saves.
    """
    origins, yaws, segments, circles = _checked(origins, yaws, segments, circles)
    n_sensors, n_beams = len(yaws), beams.count
    out = np.full((n_sensors, n_beams), np.inf)
    theta = yaws[:, None] + beams.angles()[None, :]
    dx, dy = np.cos(theta)[:, :, None], np.sin(theta)[:, :, None]
    px, py = origins[:, 0, None, None], origins[:, 1, None, None]
    if len(segments):
        s = segments.T[:, None, None, :]
        t = _ray_segment(px, py, dx, dy, s[0], s[1], s[2], s[3])
        out = np.minimum(out, t.min(axis=2))
    if len(circles):
        c = circles.T[:, None, None, :]
        t = _ray_circle(px, py, dx, dy, c[0], c[1], c[2])
        if exclude_circle is not None:
            own = np.arange(len(circles))[None, :] == np.asarray(exclude_circle)[:, None]
            t = np.where(own[:, None, :], np.inf, t)
        out = np.minimum(out, t.min(axis=2))
    out[out > range_max] = np.inf
    return out


def raycast_reference(
    origins: FloatArray,
    yaws: FloatArray,
    beams: BeamPattern,
    segments: FloatArray,
    circles: FloatArray,
    range_max: float,
    exclude_circle: IntArray | None = None,
) -> FloatArray:
    """The plain way: for every sensor, every beam, every shape, in Python. Slow on purpose."""
    origins, yaws, segments, circles = _checked(origins, yaws, segments, circles)
    angles = [float(a) for a in beams.angles()]
    seg_rows = [tuple(float(v) for v in row) for row in segments]
    circle_rows = [tuple(float(v) for v in row) for row in circles]
    out = np.full((len(yaws), beams.count), np.inf)
    for i in range(len(yaws)):
        px, py, yaw = float(origins[i, 0]), float(origins[i, 1]), float(yaws[i])
        skip = -1 if exclude_circle is None else int(exclude_circle[i])
        for k, angle in enumerate(angles):
            dx, dy = math.cos(yaw + angle), math.sin(yaw + angle)
            best = math.inf
            for x1, y1, x2, y2 in seg_rows:
                ex, ey, wx, wy = x2 - x1, y2 - y1, x1 - px, y1 - py
                denom = dx * ey - dy * ex
                if denom == 0.0:
                    continue
                t = (wx * ey - wy * ex) / denom
                u = (wx * dy - wy * dx) / denom
                if t >= 0.0 and 0.0 <= u <= 1.0 and t < best:
                    best = t
            for j, (cx, cy, r) in enumerate(circle_rows):
                if j == skip:
                    continue
                fx, fy = px - cx, py - cy
                b = fx * dx + fy * dy
                disc = b * b - (fx * fx + fy * fy - r * r)
                if disc < 0.0:
                    continue
                root = math.sqrt(disc)
                t = -b - root if -b - root >= 0.0 else -b + root
                if t >= 0.0 and t < best:
                    best = t
            if best <= range_max:
                out[i, k] = best
    return out


# -- the dense caster's narrow phase (same formulas as the reference) ---------------------
def _ray_segment(
    px: FloatArray, py: FloatArray, dx: FloatArray, dy: FloatArray,
    x1: FloatArray, y1: FloatArray, x2: FloatArray, y2: FloatArray,
) -> FloatArray:
    """Distance along each ray (unit direction dx, dy) to its segment; +inf on a miss.

    Solves p + t d = q1 + u (q2 - q1) with 2D cross products; parallel rays miss.
    """
    ex, ey, wx, wy = x2 - x1, y2 - y1, x1 - px, y1 - py
    denom = dx * ey - dy * ex
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (wx * ey - wy * ex) / denom
        u = (wx * dy - wy * dx) / denom
    hit = (denom != 0.0) & (t >= 0.0) & (u >= 0.0) & (u <= 1.0)
    out: FloatArray = np.where(hit, t, np.inf)
    return out


def _ray_circle(
    px: FloatArray, py: FloatArray, dx: FloatArray, dy: FloatArray,
    cx: FloatArray, cy: FloatArray, r: FloatArray,
) -> FloatArray:
    """Distance along each ray to the first point of its circle at t >= 0; +inf on a miss."""
    fx, fy = px - cx, py - cy
    b = fx * dx + fy * dy
    disc = b * b - (fx * fx + fy * fy - r * r)
    with np.errstate(invalid="ignore"):
        root = np.sqrt(disc)
    near, far = -b - root, -b + root
    t = np.where(near >= 0.0, near, far)
    out: FloatArray = np.where((disc >= 0.0) & (t >= 0.0), t, np.inf)
    return out


# -- the broad phase -----------------------------------------------------------------------
def _candidate_beams(
    start: FloatArray, width: FloatArray, keep: BoolArray | None, n_first: int,
    beams: BeamPattern,
) -> tuple[IntArray, IntArray, int | None]:
    """Expand angular intervals, one per entry, into (entry, beam) pairs.

    `start` (radians in the sensor frame, any value) and `width` (<= 2 pi) describe each
    entry's interval; `keep` masks the first `n_first` entries (the segments). On a full circle beam
    indices wrap (mod count) and pairs come in entry order, so the third value is the number
    of pairs of the first `n_first` entries. A partial field of view cannot wrap by index:
    there an interval is also taken one turn back, each copy clipped to the beams, pairs come
    copy by copy and the third value is None. A tolerance of 1e-7 beam widths (far above the
    rounding of atan2 / arcsin, far below a beam) keeps beams that graze an end; the narrow
    phase decides those exactly.
    """
    inv, tol, count = 1.0 / beams.angle_increment, 1e-7, beams.count
    n = len(start)
    if beams.full_circle:
        first = start * inv - beams.angle_min * inv
        lo = np.ceil(first - tol)
        counts = np.floor(first + width * inv + tol) - lo + 1.0
        if keep is not None:
            counts[:n_first] *= keep
        counts_i = np.maximum(counts, 0.0).astype(np.int64)
        ends = np.cumsum(counts_i)
        total = int(ends[-1]) if n else 0
        beam = np.arange(total) + np.repeat(lo.astype(np.int64) - (ends - counts_i), counts_i)
        beam %= count
        entry = np.repeat(np.arange(n), counts_i)
        return entry, beam, int(ends[n_first - 1]) if n_first else 0
    first = np.mod(start - beams.angle_min, TWO_PI) * inv
    last = first + width * inv
    turn = TWO_PI * inv
    lo = np.maximum(np.ceil(np.concatenate([first, first - turn]) - tol), 0.0)
    hi = np.minimum(np.floor(np.concatenate([last, last - turn]) + tol), float(count - 1))
    counts = hi - lo + 1.0
    if keep is not None:
        counts[:n_first] *= keep
        counts[n:n + n_first] *= keep
    counts_i = np.maximum(counts, 0.0).astype(np.int64)
    ends = np.cumsum(counts_i)
    total = int(ends[-1]) if n else 0
    beam = np.arange(total) + np.repeat(lo.astype(np.int64) - (ends - counts_i), counts_i)
    entry = np.repeat(np.arange(2 * n), counts_i) % max(n, 1)
    return entry, beam, None


def _checked(
    origins: FloatArray, yaws: FloatArray, segments: FloatArray, circles: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    o = np.asarray(origins, dtype=np.float64).reshape(-1, 2)
    y = np.asarray(yaws, dtype=np.float64).reshape(-1)
    if len(o) != len(y):
        raise ValueError(f"{len(o)} origins but {len(y)} yaws")
    s = np.asarray(segments, dtype=np.float64).reshape(-1, 4)
    c = np.asarray(circles, dtype=np.float64).reshape(-1, 3)
    return o, y, s, c
