"""Nav2 occupancy-grid maps (PGM + map_server YAML) rasterised from a world's SDF geometry.

Gazebo, the headless simulator and the route-graph validator all read `gazebo_worlds/*.sdf`;
the Nav2 map must show the same walls, so it is generated from that file
(`delivery_robot.world_geometry`), never drawn by hand. `tools/make_nav2_maps.py` writes
`config/maps/<world>.{pgm,yaml}` and `--check` (run by the tests) fails when a committed map is
not byte for byte what the SDF gives today, so a world edit cannot leave a stale map behind.

What is an obstacle: every static collision shape that overlaps the robot's body height band
(route_graph.MIN_OBSTACLE_HEIGHT .. DEFAULT_ROBOT_HEIGHT), the same band the route validator
uses; a 15 cm kerb is in the map (the robot cannot climb it), road paint and tree crowns are
not. A cell is occupied when a shape overlaps its square by more than a hair (exact
separating-axis test, so a wall thinner than a cell is never lost); everything else inside the
map is free: the worlds are fully known, so there is no unknown space. AMCL's likelihood-field
model tolerates map cells the lidar plane passes over (kerbs): it scores where beams end, not
what they cross.

Image conventions (Nav2 map_server, `mode: trinary`): 0 = occupied (black), 254 = free, row 0
is the top (largest y); `origin` is the map-frame pose of the lower-left pixel's corner. The map
frame is the SDF world frame (REP-105 `map`). Output is deterministic: the same SDF gives the
same bytes on every machine (only exactly rounded float operations, fixed formatting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from delivery_robot.route_graph import DEFAULT_ROBOT_HEIGHT, MIN_OBSTACLE_HEIGHT
from delivery_robot.world_geometry import WorldGeometry, load_world_geometry

OCCUPIED = 0  # PGM value of an occupied cell (black)
FREE = 254  # PGM value of a free cell (map_server: anything brighter than free_thresh)
DEFAULT_RESOLUTION = 0.1  # m per cell: 0.56 m wide robot on >= 2.5 m wide lanes
DEFAULT_MARGIN = 2.0  # m of free space around the outermost obstacle
_OVERLAP_EPS = 1e-6  # m: shapes that merely touch a cell's edge do not occupy it

BoolGrid = npt.NDArray[np.bool_]


class MapError(ValueError):
    """A map cannot be made (bad resolution, empty world) or read (malformed PGM/YAML)."""


@dataclass(frozen=True)
class OccupancyMap:
    """A grid in the map frame: `occupied[iy, ix]`, iy = 0 the bottom row (smallest y)."""

    occupied: BoolGrid
    resolution: float  # m per cell
    origin_x: float  # m: map-frame x of the lower-left corner of cell (0, 0)
    origin_y: float

    @property
    def width(self) -> int:
        return int(self.occupied.shape[1])

    @property
    def height(self) -> int:
        return int(self.occupied.shape[0])

    def cell_of(self, x: float, y: float) -> tuple[int, int] | None:
        """(ix, iy) of the cell holding map point (x, y), None outside the map."""
        ix = math.floor((x - self.origin_x) / self.resolution)
        iy = math.floor((y - self.origin_y) / self.resolution)
        if 0 <= ix < self.width and 0 <= iy < self.height:
            return ix, iy
        return None

    def is_occupied(self, x: float, y: float) -> bool:
        """Whether the cell at map point (x, y) is occupied (outside the map: occupied)."""
        cell = self.cell_of(x, y)
        return cell is None or bool(self.occupied[cell[1], cell[0]])

    def pgm_bytes(self) -> bytes:
        """Binary PGM (P5), maxval 255, row 0 = top of the map."""
        pixels = np.where(self.occupied[::-1, :], OCCUPIED, FREE).astype(np.uint8)
        header = f"P5\n{self.width} {self.height}\n255\n".encode("ascii")
        return header + pixels.tobytes()

    def yaml_text(self, image: str, source: str = "") -> str:
        """The map_server YAML; `image` is relative to the YAML's folder."""
        lines = []
        if source:
            lines += [f"# Generated from {source} by tools/make_nav2_maps.py: do not edit.",
                      "# Regenerate after changing the world: tools/ros_env python "
                      "tools/make_nav2_maps.py"]
        lines += [
            f"image: {image}",
            "mode: trinary",
            f"resolution: {_fmt(self.resolution)}",
            f"origin: [{_fmt(self.origin_x)}, {_fmt(self.origin_y)}, 0.0]",
            "negate: 0",
            "occupied_thresh: 0.65",
            "free_thresh: 0.25",
        ]
        return "\n".join(lines) + "\n"


def rasterize(
    geometry: WorldGeometry,
    resolution: float = DEFAULT_RESOLUTION,
    margin: float = DEFAULT_MARGIN,
    z_low: float = MIN_OBSTACLE_HEIGHT,
    z_high: float = DEFAULT_ROBOT_HEIGHT,
) -> OccupancyMap:
    """The occupancy map of the shapes of `geometry` that overlap heights (z_low, z_high)."""
    if not (math.isfinite(resolution) and resolution > 0.0):
        raise MapError(f"resolution must be > 0 m, got {resolution}")
    if not (math.isfinite(margin) and margin >= 0.0):
        raise MapError(f"margin must be >= 0 m, got {margin}")
    band = geometry.in_height_band(z_low, z_high)
    if not band.boxes and not band.circle_shapes:
        raise MapError(f"world {geometry.world_name!r} has no obstacle between "
                       f"{z_low} m and {z_high} m: nothing to map")
    x0, y0, x1, y1 = band.bounds
    ix0 = math.floor((x0 - margin) / resolution)
    iy0 = math.floor((y0 - margin) / resolution)
    ix1 = math.ceil((x1 + margin) / resolution)
    iy1 = math.ceil((y1 + margin) / resolution)
    origin_x, origin_y = ix0 * resolution, iy0 * resolution
    occupied = np.zeros((iy1 - iy0, ix1 - ix0), dtype=np.bool_)
    half = resolution / 2.0
    for box in band.boxes:
        _mark_box(occupied, box.corners(), box.cx, box.cy, box.yaw, box.length, box.width,
                  origin_x, origin_y, resolution, half)
    for circle in band.circle_shapes:
        _mark_circle(occupied, circle.cx, circle.cy, circle.radius, origin_x, origin_y,
                     resolution, half)
    return OccupancyMap(occupied, resolution, origin_x, origin_y)


def map_of_world(sdf_path: str | Path, resolution: float = DEFAULT_RESOLUTION,
                 margin: float = DEFAULT_MARGIN) -> OccupancyMap:
    """Rasterise the static obstacles of an SDF world file."""
    return rasterize(load_world_geometry(sdf_path), resolution, margin)


def map_files(world_sdf: Path, image_name: str, source: str,
              resolution: float = DEFAULT_RESOLUTION) -> tuple[bytes, str]:
    """(PGM bytes, YAML text) of one world, as `tools/make_nav2_maps.py` writes them."""
    grid = map_of_world(world_sdf, resolution)
    return grid.pgm_bytes(), grid.yaml_text(image_name, source)


def world_maps(root: Path) -> dict[str, tuple[bytes, str]]:
    """{world: (PGM bytes, YAML text)} for every <root>/gazebo_worlds/*.sdf, as committed in
    <root>/config/maps/."""
    out: dict[str, tuple[bytes, str]] = {}
    for sdf in sorted((root / "gazebo_worlds").glob("*.sdf")):
        out[sdf.stem] = map_files(sdf, f"{sdf.stem}.pgm", f"gazebo_worlds/{sdf.name}")
    return out


def stale_maps(root: Path) -> list[str]:
    """How the committed maps differ from what the worlds give today (empty: up to date)."""
    problems = []
    for world, (pgm, yaml_text) in world_maps(root).items():
        for path, expected in ((root / "config" / "maps" / f"{world}.pgm", pgm),
                               (root / "config" / "maps" / f"{world}.yaml",
                                yaml_text.encode("utf-8"))):
            if not path.exists():
                problems.append(f"{path.relative_to(root)}: missing")
            elif path.read_bytes() != expected:
                problems.append(f"{path.relative_to(root)}: differs from what "
                                f"gazebo_worlds/{world}.sdf gives")
    return problems


def read_map(yaml_path: str | Path) -> OccupancyMap:
    """Read a map_server YAML + PGM written by this module (P5, trinary) back into a grid."""
    import yaml

    path = Path(yaml_path)
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise MapError(f"{path}: cannot read map YAML: {error}") from None
    if not isinstance(meta, dict):
        raise MapError(f"{path}: not a map_server YAML mapping")
    missing = {"image", "resolution", "origin"} - meta.keys()
    if missing:
        raise MapError(f"{path}: missing {sorted(missing)}")
    origin = meta["origin"]
    if not (isinstance(origin, list) and len(origin) == 3):
        raise MapError(f"{path}: origin must be [x, y, yaw], got {origin!r}")
    if float(origin[2]) != 0.0:
        raise MapError(f"{path}: rotated maps (origin yaw {origin[2]}) are not supported")
    image = path.parent / str(meta["image"])
    try:
        data = image.read_bytes()
    except OSError as error:
        raise MapError(f"{path}: cannot read image {image}: {error}") from None
    width, height, pixels = _parse_pgm(data, str(image))
    occupied = (pixels.reshape(height, width)[::-1, :] < 128).copy()
    return OccupancyMap(occupied, float(meta["resolution"]), float(origin[0]), float(origin[1]))


# ---- rasterisation -------------------------------------------------------------------------


def _cell_range(lo: float, hi: float, origin: float, resolution: float, size: int
                ) -> tuple[int, int]:
    """Index range [a, b) of cells whose span may overlap [lo, hi]."""
    a = max(0, math.floor((lo - origin) / resolution) - 1)
    b = min(size, math.ceil((hi - origin) / resolution) + 1)
    return a, b


def _centres(a: int, b: int, origin: float, resolution: float) -> npt.NDArray[np.float64]:
    return origin + (np.arange(a, b, dtype=np.float64) + 0.5) * resolution


def _mark_box(occupied: BoolGrid, corners: npt.NDArray[np.float64], cx: float, cy: float,
              yaw: float, length: float, width: float, origin_x: float, origin_y: float,
              resolution: float, half: float) -> None:
    """Occupy every cell whose square overlaps the oriented rectangle (separating axes)."""
    h, w = occupied.shape
    ax, bx = _cell_range(float(corners[:, 0].min()), float(corners[:, 0].max()), origin_x,
                         resolution, w)
    ay, by = _cell_range(float(corners[:, 1].min()), float(corners[:, 1].max()), origin_y,
                         resolution, h)
    if ax >= bx or ay >= by:
        return
    xs = _centres(ax, bx, origin_x, resolution)[None, :]
    ys = _centres(ay, by, origin_y, resolution)[:, None]
    c, s = math.cos(yaw), math.sin(yaw)
    # Cell axes x and y: the box's extent along each axis against the cell's half width.
    ext_x = abs(c) * length / 2.0 + abs(s) * width / 2.0
    ext_y = abs(s) * length / 2.0 + abs(c) * width / 2.0
    hit = (np.abs(xs - cx) < ext_x + half - _OVERLAP_EPS) & (
        np.abs(ys - cy) < ext_y + half - _OVERLAP_EPS)
    # Box axes u = (c, s) and v = (-s, c): the cell's extent along each against the box's.
    cell_ext_u = half * (abs(c) + abs(s))
    du = (xs - cx) * c + (ys - cy) * s
    dv = -(xs - cx) * s + (ys - cy) * c
    hit &= np.abs(du) < length / 2.0 + cell_ext_u - _OVERLAP_EPS
    hit &= np.abs(dv) < width / 2.0 + cell_ext_u - _OVERLAP_EPS
    occupied[ay:by, ax:bx] |= hit


def _mark_circle(occupied: BoolGrid, cx: float, cy: float, radius: float, origin_x: float,
                 origin_y: float, resolution: float, half: float) -> None:
    """Occupy every cell whose square overlaps the circle (nearest point of the square)."""
    h, w = occupied.shape
    ax, bx = _cell_range(cx - radius, cx + radius, origin_x, resolution, w)
    ay, by = _cell_range(cy - radius, cy + radius, origin_y, resolution, h)
    if ax >= bx or ay >= by:
        return
    xs = _centres(ax, bx, origin_x, resolution)[None, :]
    ys = _centres(ay, by, origin_y, resolution)[:, None]
    gap_x = np.maximum(np.abs(xs - cx) - half, 0.0)
    gap_y = np.maximum(np.abs(ys - cy) - half, 0.0)
    inside_x = np.abs(xs - cx) < radius + half - _OVERLAP_EPS
    inside_y = np.abs(ys - cy) < radius + half - _OVERLAP_EPS
    hit = inside_x & inside_y & (gap_x * gap_x + gap_y * gap_y < (radius - _OVERLAP_EPS) ** 2)
    occupied[ay:by, ax:bx] |= hit


# ---- files ---------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    """A float in fixed notation with no float noise (0.1 stays "0.1", -62.0 stays "-62.0")."""
    text = f"{value:.6f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return "0.0" if text in ("-0.0", "0.0") else text


def _parse_pgm(data: bytes, source: str) -> tuple[int, int, npt.NDArray[np.uint8]]:
    """Width, height and pixels of a binary 8-bit PGM (no comments: we never write any)."""
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise MapError(f"{source}: truncated PGM header")
        fields.append(data[start:pos])
    pos += 1  # the single whitespace after maxval
    if fields[0] != b"P5":
        raise MapError(f"{source}: not a binary PGM (magic {fields[0]!r}, expected b'P5')")
    try:
        width, height, maxval = (int(f) for f in fields[1:])
    except ValueError:
        raise MapError(f"{source}: bad PGM header {fields!r}") from None
    if maxval != 255 or width <= 0 or height <= 0:
        raise MapError(f"{source}: need an 8-bit PGM, got {width}x{height} maxval {maxval}")
    pixels = np.frombuffer(data, dtype=np.uint8, count=-1, offset=pos)
    if pixels.size != width * height:
        raise MapError(f"{source}: {pixels.size} pixels, header says {width}x{height}")
    return width, height, pixels
