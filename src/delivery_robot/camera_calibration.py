"""Camera calibration files (the YAML that ROS camera_calibration writes) as plain data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class CameraCalibration:
    camera_name: str
    width: int
    height: int
    distortion_model: str
    k: tuple[float, ...]  # 3x3 row-major
    d: tuple[float, ...]
    r: tuple[float, ...]  # 3x3
    p: tuple[float, ...]  # 3x4

    def scaled(self, width: int, height: int) -> CameraCalibration:
        """The same camera seen at another resolution (we publish small images to keep rclpy
        fast): focal lengths and principal point scale with the image."""
        sx, sy = width / self.width, height / self.height
        k = list(self.k)
        k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx, k[4] * sy, k[5] * sy
        p = list(self.p)
        p[0], p[2], p[3], p[5], p[6] = p[0] * sx, p[2] * sx, p[3] * sx, p[5] * sy, p[6] * sy
        return CameraCalibration(self.camera_name, width, height, self.distortion_model,
                                 tuple(k), self.d, self.r, tuple(p))


def _matrix(data: dict[str, Any], key: str, size: int | None, path: Path) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in data[key]["data"])
    except (KeyError, TypeError, ValueError) as error:
        raise CalibrationError(f"{path}: {key}.data missing or not numbers ({error})") from None
    if size is not None and len(values) != size:
        raise CalibrationError(f"{path}: {key} has {len(values)} values, expected {size}")
    return values


def load_calibration(path: Path) -> CameraCalibration:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CalibrationError(f"{path}: cannot read calibration: {error}") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: not a camera calibration mapping")
    try:
        width, height = int(data["image_width"]), int(data["image_height"])
    except (KeyError, TypeError, ValueError):
        raise CalibrationError(f"{path}: image_width / image_height missing") from None
    if width <= 0 or height <= 0:
        raise CalibrationError(f"{path}: image size must be positive, got {width}x{height}")
    return CameraCalibration(
        camera_name=str(data.get("camera_name", "camera")), width=width, height=height,
        distortion_model=str(data.get("distortion_model", "plumb_bob")),
        k=_matrix(data, "camera_matrix", 9, path),
        d=_matrix(data, "distortion_coefficients", None, path),
        r=_matrix(data, "rectification_matrix", 9, path),
        p=_matrix(data, "projection_matrix", 12, path),
    )
