"""2D footprints of the static obstacles of an SDF world (for lidar ray casting and route checks).

The headless simulator and the route-graph validator must see the same walls as Gazebo, so they
read the very SDF file Gazebo loads. Only the stdlib XML parser is used (no sdformat bindings,
no ROS), which limits what is understood on purpose: collision geometry of boxes, cylinders,
spheres and capsules, placed by model / nested model / link / collision poses with yaw only
(roll and pitch must be zero, so a box is an oriented rectangle and a cylinder a circle).
Anything else that has a collision (meshes, heightmaps, `<include>`, tilted shapes, frames) is
reported as an error instead of being silently ignored, because a missing wall is a robot in a
wall. Planes (the ground) and visuals are ignored. Units: metres and radians (REP-103).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
_ArrayT = TypeVar("_ArrayT", bound=npt.NDArray[np.generic])

# Roll/pitch below this (rad) count as zero: SDF files often carry "0 0 0" as "1e-17".
_TILT_TOLERANCE = 1e-6


class WorldGeometryError(ValueError):
    """The SDF cannot be turned into footprints; lists every reason at once."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the SDF world:\n{lines}")


@dataclass(frozen=True)
class Pose2D:
    """A planar pose plus height: what survives of an SDF pose when roll = pitch = 0."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    yaw: float = 0.0

    def compose(self, child: Pose2D) -> Pose2D:
        """The pose of `child` (expressed in this frame) in this frame's parent."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return Pose2D(
            x=self.x + c * child.x - s * child.y,
            y=self.y + s * child.x + c * child.y,
            z=self.z + child.z,
            yaw=_wrap(self.yaw + child.yaw),
        )


@dataclass(frozen=True)
class BoxFootprint:
    """An oriented rectangle: a box collision seen from above, with its height range."""

    name: str
    cx: float
    cy: float
    yaw: float
    length: float  # along the box's own x axis
    width: float  # along the box's own y axis
    z_min: float
    z_max: float

    def corners(self) -> FloatArray:
        """The 4 corners (4x2), counter-clockwise, in the world frame."""
        hx, hy = self.length / 2.0, self.width / 2.0
        local = np.array([[hx, hy], [-hx, hy], [-hx, -hy], [hx, -hy]], dtype=np.float64)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        rot = np.array([[c, -s], [s, c]], dtype=np.float64)
        out: FloatArray = local @ rot.T + np.array([self.cx, self.cy], dtype=np.float64)
        return out


@dataclass(frozen=True)
class CircleFootprint:
    """A circle: a vertical cylinder, a sphere or a vertical capsule seen from above."""

    name: str
    cx: float
    cy: float
    radius: float
    z_min: float
    z_max: float


@dataclass(frozen=True)
class WorldGeometry:
    """The static obstacles of one world, as shapes and as arrays ready for vectorised casting.

    `segments` (Nx4: x1, y1, x2, y2; four per box) and `circles` (Mx3: cx, cy, r) are read-only
    arrays; `segment_owner[i]` / `circle_owner[j]` index into `boxes` / `circle_shapes` so a hit
    can be named. Use `in_height_band` first to keep only what a sensor plane or a robot meets.
    """

    world_name: str
    boxes: tuple[BoxFootprint, ...]
    circle_shapes: tuple[CircleFootprint, ...]

    def in_height_band(self, z_low: float, z_high: float) -> WorldGeometry:
        """Only the shapes that overlap heights (z_low, z_high), e.g. a lidar plane or a robot."""
        return WorldGeometry(
            world_name=self.world_name,
            boxes=tuple(b for b in self.boxes if b.z_max > z_low and b.z_min < z_high),
            circle_shapes=tuple(
                c for c in self.circle_shapes if c.z_max > z_low and c.z_min < z_high
            ),
        )

    @cached_property
    def segments(self) -> FloatArray:
        """Every box edge as a row (x1, y1, x2, y2); shape (4 * len(boxes), 4)."""
        if not self.boxes:
            return _frozen(np.zeros((0, 4), dtype=np.float64))
        corners = np.stack([b.corners() for b in self.boxes])  # (B, 4, 2)
        ends = np.roll(corners, -1, axis=1)
        return _frozen(np.concatenate([corners, ends], axis=2).reshape(-1, 4))

    @cached_property
    def segment_owner(self) -> npt.NDArray[np.int64]:
        """For each row of `segments`, the index of its box in `boxes`."""
        return _frozen(np.repeat(np.arange(len(self.boxes), dtype=np.int64), 4))

    @cached_property
    def circles(self) -> FloatArray:
        """Every circle as a row (cx, cy, radius); shape (len(circle_shapes), 3)."""
        rows = [(c.cx, c.cy, c.radius) for c in self.circle_shapes]
        return _frozen(np.array(rows, dtype=np.float64).reshape(-1, 3))

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) over all shapes; zeros for an empty world."""
        xs: list[float] = []
        ys: list[float] = []
        if self.boxes:
            pts = self.segments[:, :2]
            xs += [float(pts[:, 0].min()), float(pts[:, 0].max())]
            ys += [float(pts[:, 1].min()), float(pts[:, 1].max())]
        for c in self.circle_shapes:
            xs += [c.cx - c.radius, c.cx + c.radius]
            ys += [c.cy - c.radius, c.cy + c.radius]
        if not xs:
            return (0.0, 0.0, 0.0, 0.0)
        return (min(xs), min(ys), max(xs), max(ys))


def load_world_geometry(path: str | Path, *, include_dynamic: bool = False) -> WorldGeometry:
    """Read an SDF world file; raises WorldGeometryError listing every unsupported part."""
    p = Path(path)
    return parse_world_geometry(
        p.read_text(encoding="utf-8"), source=str(p), include_dynamic=include_dynamic
    )


def parse_world_geometry(
    xml_text: str, *, source: str = "<sdf>", include_dynamic: bool = False
) -> WorldGeometry:
    """Footprints of the (static, unless include_dynamic) models of the first world in the SDF."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise WorldGeometryError(source, [f"not well-formed XML: {exc}"]) from None
    if root.tag != "sdf":
        raise WorldGeometryError(source, [f"root element is <{root.tag}>, expected <sdf>"])
    world = root.find("world")
    if world is None:
        raise WorldGeometryError(source, ["no <world> element"])
    collector = _Collector(include_dynamic)
    if world.find("include") is not None:
        collector.problems.append("<include> is not supported: write the model inline")
    for frame in world.findall("frame"):
        collector.problems.append(f"<frame name={frame.get('name')!r}> is not supported")
    for model in world.findall("model"):
        collector.model(model, Pose2D(), prefix="", parent_static=False)
    if collector.problems:
        raise WorldGeometryError(source, collector.problems)
    return WorldGeometry(
        world_name=world.get("name", ""),
        boxes=tuple(collector.boxes),
        circle_shapes=tuple(collector.circles),
    )


class _Collector:
    """Walks models depth-first, composing poses and gathering shapes and problems."""

    def __init__(self, include_dynamic: bool) -> None:
        self.include_dynamic = include_dynamic
        self.boxes: list[BoxFootprint] = []
        self.circles: list[CircleFootprint] = []
        self.problems: list[str] = []

    def model(self, el: ET.Element, parent: Pose2D, prefix: str, parent_static: bool) -> None:
        name = prefix + el.get("name", "?")
        static = parent_static or _text(el, "static") in ("true", "1")
        if not (static or self.include_dynamic):
            return
        pose = parent.compose(self.pose(el, name))
        if el.find("include") is not None:
            self.problems.append(f"{name}: <include> is not supported: write the model inline")
        for frame in el.findall("frame"):
            self.problems.append(f"{name}: <frame name={frame.get('name')!r}> is not supported")
        for nested in el.findall("model"):
            self.model(nested, pose, prefix=f"{name}::", parent_static=static)
        for link in el.findall("link"):
            link_name = f"{name}::{link.get('name', '?')}"
            link_pose = pose.compose(self.pose(link, link_name))
            for col in link.findall("collision"):
                col_name = f"{link_name}::{col.get('name', '?')}"
                self.collision(col, link_pose.compose(self.pose(col, col_name)), col_name)

    def collision(self, el: ET.Element, pose: Pose2D, name: str) -> None:
        geom = el.find("geometry")
        shape = geom[0] if geom is not None and len(geom) else None
        if shape is None:
            self.problems.append(f"{name}: collision without geometry")
            return
        tag = shape.tag
        if tag == "plane":
            return  # the ground: nothing to bump into
        if tag == "box":
            size = self.numbers(shape, "size", 3, name)
            if size is not None and self.positive(size, name):
                lx, ly, lz = size
                z_min, z_max = pose.z - lz / 2.0, pose.z + lz / 2.0
                self.boxes.append(
                    BoxFootprint(name, pose.x, pose.y, pose.yaw, lx, ly, z_min, z_max)
                )
            return
        if tag in ("cylinder", "capsule", "sphere"):
            radius = self.numbers(shape, "radius", 1, name)
            length = [0.0] if tag == "sphere" else self.numbers(shape, "length", 1, name)
            if radius is None or length is None or not self.positive(radius, name):
                return
            r, half = radius[0], length[0] / 2.0
            if tag != "cylinder":
                half += r  # the rounded ends
            self.circles.append(
                CircleFootprint(name, pose.x, pose.y, r, pose.z - half, pose.z + half)
            )
            return
        self.problems.append(f"{name}: <{tag}> collision geometry is not supported")

    def pose(self, el: ET.Element, name: str) -> Pose2D:
        p = el.find("pose")
        if p is None:
            return Pose2D()
        if p.get("relative_to"):
            self.problems.append(f"{name}: <pose relative_to=...> is not supported")
            return Pose2D()
        try:
            values = [float(v) for v in (p.text or "").split()]
        except ValueError:
            self.problems.append(f"{name}: pose {p.text!r} is not numbers")
            return Pose2D()
        fmt = p.get("rotation_format", "euler_rpy")
        if fmt == "quat_xyzw" and len(values) == 7:
            x, y, z, qx, qy, qz, qw = values
            roll = math.atan2(2 * (qw * qx + qy * qz), 1 - 2 * (qx * qx + qy * qy))
            pitch = math.asin(max(-1.0, min(1.0, 2 * (qw * qy - qz * qx))))
            yaw = math.atan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
        elif fmt == "euler_rpy" and len(values) == 6:
            x, y, z, roll, pitch, yaw = values
            if p.get("degrees") in ("true", "1"):
                roll, pitch, yaw = (math.radians(a) for a in (roll, pitch, yaw))
        else:
            self.problems.append(f"{name}: pose {p.text!r} ({fmt}) has the wrong number of values")
            return Pose2D()
        if abs(_wrap(roll)) > _TILT_TOLERANCE or abs(_wrap(pitch)) > _TILT_TOLERANCE:
            self.problems.append(
                f"{name}: roll/pitch ({roll:.3g}, {pitch:.3g}) rad not supported (yaw only)"
            )
        return Pose2D(x, y, z, _wrap(yaw))

    def numbers(self, el: ET.Element, tag: str, count: int, name: str) -> list[float] | None:
        text = _text(el, tag)
        try:
            values = [float(v) for v in (text or "").split()]
        except ValueError:
            values = []
        if len(values) != count or not all(math.isfinite(v) for v in values):
            self.problems.append(f"{name}: <{el.tag}><{tag}> {text!r} needs {count} number(s)")
            return None
        return values

    def positive(self, values: list[float], name: str) -> bool:
        if all(v > 0.0 for v in values):
            return True
        self.problems.append(f"{name}: sizes must be > 0, got {values}")
        return False


def _text(el: ET.Element, tag: str) -> str | None:
    child = el.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _wrap(angle: float) -> float:
    """Angle in (-pi, pi]."""
    wrapped = math.atan2(math.sin(angle), math.cos(angle))
    return math.pi if wrapped == -math.pi else wrapped


def _frozen(arr: _ArrayT) -> _ArrayT:
    """Mark a cached array read-only, so no caller can change what the others see."""
    arr.flags.writeable = False
    return arr
