"""Compartment check: is anything in the compartment? From its fixed camera, against a
reference image of the empty compartment, under whatever light there is.

Used to confirm loading and that the recipient took the goods (the handoff node takes
`compartment/occupancy` as the verdict). Lighting is what changes between the reference and a
check: exposure, white balance, the LED ageing, light leaking in past the lid, lens shading;
and the camera shakes a little on its mount. So two cues are used, both blind to smooth
multiplicative light:
- appearance: per colour channel, log(frame) - log(reference) is the log of the light ratio
  for an empty compartment, a smooth surface; a robust quadratic fit (iteratively trimmed)
  removes it, and pixels whose residual exceeds `pixel_threshold` (or `noise_factor` robust
  sigmas) changed. Goods the floor's colour but lit differently (their top faces the light)
  still differ by more than the fit can explain.
- structure: gradients of the log grey image: light that varies smoothly adds almost nothing
  to them, while goods add edges (box outlines, tape, a bag's creases) and hide the floor's own
  (the label, scuffs). A goods item filling the whole view changes the light ratio uniformly,
  which the fit absorbs, but not its structure.
The changed area shares of both, each over its calibrated threshold, give the score; above 1
is OCCUPIED. Frames too dark or too clipped to judge are UNKNOWN, with the reason.

Thresholds come from `calibrate_thresholds` on generated data (synthetic_scenes); the defaults
here are its result (bench/bench_perception.py reports the separation it achieves).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from delivery_robot.compartment_handoff import Occupancy

FloatImage = npt.NDArray[np.float32]
Image = npt.NDArray[np.uint8]

LOG_OFFSET = 8.0  # log(grey + offset): dark pixels' noise would dominate otherwise


@dataclass(frozen=True)
class CompartmentCheckConfig:
    working_width: int = 160  # frames are compared at this width (averages noise and shake)
    smoothing_sigma: float = 1.0  # px at working size
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x0, y0, x1, y1 shares
    pixel_threshold: float = 0.12  # log light ratio residual that counts as changed (~13 %)
    edge_threshold: float = 0.06  # log gradient difference per working pixel that counts
    noise_factor: float = 4.0  # ... or this many robust sigmas, if larger
    area_fraction: float = 0.0105  # changed appearance share of the region that means goods
    edge_fraction: float = 0.017  # changed structure share of the region that means goods
    min_level: float = 12.0  # mean grey of the region below this: too dark (UNKNOWN)
    max_clipped: float = 0.3  # share of clipped or black pixels above this: UNKNOWN

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.region
        problems = []
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            problems.append(f"region must be 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1: {self.region}")
        if not 32 <= self.working_width <= 1024:
            problems.append("working_width must be in [32, 1024]")
        positive = ("pixel_threshold", "edge_threshold", "noise_factor", "area_fraction",
                    "edge_fraction")
        problems += [f"{name} must be > 0" for name in positive if not getattr(self, name) > 0]
        if not self.smoothing_sigma >= 0:
            problems.append("smoothing_sigma must be >= 0")
        if not 0.0 < self.max_clipped <= 1.0:
            problems.append("max_clipped must be in (0, 1]")
        if problems:
            raise ValueError("compartment check: " + "; ".join(problems))


@dataclass(frozen=True)
class CompartmentVerdict:
    occupancy: Occupancy
    score: float  # max of both changed shares over their thresholds; > 1: occupied
    changed_fraction: float  # appearance cue
    edge_fraction: float  # structure cue
    reason: str  # why UNKNOWN, or a summary


@dataclass
class _Prepared:
    log: FloatImage  # (h, w, channels) log(grey + LOG_OFFSET), smoothed
    usable: npt.NDArray[np.bool_]  # (h, w): no channel clipped (>= 250) or black (<= 2)


BLOCKS = (12, 9)  # light-model fit: the region is cut into this many blocks (columns, rows)
LMEDS_TRIALS = 150
LMEDS_SUBSET = 10
FIT_STRIDE = 5


class CompartmentChecker:
    """Compares frames of one fixed camera with the empty reference it was given."""

    def __init__(self, reference: Image, config: CompartmentCheckConfig | None = None) -> None:
        self.config = config or CompartmentCheckConfig()
        if reference.ndim not in (2, 3) or reference.dtype != np.uint8 or min(
                reference.shape[:2]) < 16:
            raise ValueError(f"reference must be a grey or colour uint8 image of at least "
                             f"16x16, got {reference.dtype} {reference.shape}")
        self._shape = reference.shape
        height, width = reference.shape[:2]
        self._size = (self.config.working_width,
                      max(16, round(self.config.working_width * height / width)))
        self._ref = self._prepare(reference)
        w, h = self._size
        x0, y0, x1, y1 = self.config.region
        r0, c0 = int(y0 * h), int(x0 * w)
        r1, c1 = max(r0 + 8, int(round(y1 * h))), max(c0 + 8, int(round(x1 * w)))
        self._window = (slice(r0, min(h, r1)), slice(c0, min(w, c1)))
        rows, cols = np.mgrid[self._window[0], self._window[1]]
        self._u = (cols / w * 2 - 1).astype(np.float32)
        self._v = (rows / h * 2 - 1).astype(np.float32)
        # LMedS subsets, drawn once: checks are repeatable.
        rng = np.random.default_rng(0)
        count = BLOCKS[0] * BLOCKS[1]
        self._subsets = np.array([rng.choice(count, LMEDS_SUBSET, replace=False)
                                  for _ in range(LMEDS_TRIALS)])
        window = np.asarray(cv2.createHanningWindow((w, h), cv2.CV_32F), dtype=np.float32)
        self._hanning = window
        self._models: dict[int, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
        self._ref_grey = self._ref.log.mean(axis=2)
        gx, gy = self._gradient(self._ref_grey)
        self._ref_gradient = (gx[self._window], gy[self._window])

    @property
    def reference_shape(self) -> tuple[int, ...]:
        return tuple(self._shape)

    def _prepare(self, image: Image) -> _Prepared:
        small = np.asarray(cv2.resize(image, self._size, interpolation=cv2.INTER_AREA),
                           dtype=np.float32)
        if small.ndim == 2:
            small = small[:, :, None]
        usable = (np.max(small, axis=2) < 250.0) & (np.min(small, axis=2) > 2.0)
        # A clipped pixel spreads over its neighbours when smoothed: grow the mask.
        usable = cv2.erode(usable.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if self.config.smoothing_sigma > 0:
            small = np.asarray(cv2.GaussianBlur(small, (0, 0), self.config.smoothing_sigma),
                               dtype=np.float32).reshape(small.shape)
        return _Prepared(np.log(small + np.float32(LOG_OFFSET)), usable)

    @staticmethod
    def _gradient(grey: FloatImage) -> tuple[FloatImage, FloatImage]:
        gx = np.asarray(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), dtype=np.float32) / 8.0
        gy = np.asarray(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3), dtype=np.float32) / 8.0
        return gx, gy

    def check(self, frame: Image) -> CompartmentVerdict:
        cfg = self.config
        if frame.ndim != len(self._shape) or (frame.ndim == 3 and
                                              frame.shape[2] != self._shape[2]):
            raise ValueError(f"frame {frame.shape} does not match the reference {self._shape} "
                             "(same camera, same encoding)")
        ref_h, ref_w = self._shape[:2]
        if abs(frame.shape[1] / frame.shape[0] - ref_w / ref_h) > 0.02:
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, the reference "
                             f"{ref_w}x{ref_h}: another view")
        cur = self._prepare(frame)
        window = self._window
        level = float(np.exp(cur.log[window]).mean() - LOG_OFFSET)
        if level < cfg.min_level:
            return CompartmentVerdict(Occupancy.UNKNOWN, math.nan, math.nan, math.nan,
                                      f"too dark to judge (mean grey {level:.0f})")
        usable = cur.usable[window] & self._ref.usable[window]
        unusable = 1.0 - float(usable.mean())
        if unusable > cfg.max_clipped:
            return CompartmentVerdict(Occupancy.UNKNOWN, math.nan, math.nan, math.nan,
                                      f"too bright to judge ({unusable:.0%} clipped)")
        log = self._align(cur.log)
        channels = log.shape[2]
        changed = np.zeros(self._u.shape, dtype=bool)
        gammas = []
        # Clipped pixels say something too: where the light model expects the empty floor
        # well below saturation, a clipped pixel is something brighter (a white bag).
        clipped = ~cur.usable[window] & self._ref.usable[window] & (
            log[window].max(axis=2) > math.log(240.0 + LOG_OFFSET))
        expected_dark = np.ones(self._u.shape, dtype=bool)
        for c in range(channels):
            residual, model, gamma = self._fit_light(log[window][:, :, c], c, usable)
            gammas.append(gamma)
            sigma = 1.4826 * float(np.median(np.abs(residual[usable])))
            changed |= np.abs(residual) > max(cfg.pixel_threshold, cfg.noise_factor * sigma)
            expected_dark &= model < math.log(200.0 + LOG_OFFSET)
        changed = (changed & usable) | (clipped & expected_dark)
        changed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN,
                                   np.ones((2, 2), np.uint8)) > 0
        # Structure: a tone curve scales log gradients by the fitted gamma ratio.
        gx, gy = self._gradient(np.ascontiguousarray(log.mean(axis=2)))
        scale = float(np.mean(gammas))
        dx = gx[window] - scale * self._ref_gradient[0]
        dy = gy[window] - scale * self._ref_gradient[1]
        magnitude = np.sqrt(dx * dx + dy * dy)
        sigma_e = 1.4826 * float(np.median(magnitude[usable]))
        edges = (magnitude > max(cfg.edge_threshold, cfg.noise_factor * sigma_e)) & usable
        edges = cv2.morphologyEx(edges.astype(np.uint8), cv2.MORPH_OPEN,
                                 np.ones((2, 2), np.uint8)) > 0
        changed_fraction = float(changed.mean())
        edge_fraction = float(edges.mean())
        score = max(changed_fraction / cfg.area_fraction, edge_fraction / cfg.edge_fraction)
        occupancy = Occupancy.OCCUPIED if score > 1.0 else Occupancy.EMPTY
        return CompartmentVerdict(occupancy, score, changed_fraction, edge_fraction,
                                  f"{occupancy.name.lower()}: {changed_fraction:.1%} of the "
                                  f"region changed, {edge_fraction:.1%} by edges")

    def _align(self, log: FloatImage) -> FloatImage:
        """The frame shifted onto the reference (the camera shakes on its mount)."""
        grey = np.ascontiguousarray(log.mean(axis=2))
        (sx, sy), _ = cv2.phaseCorrelate(self._ref_grey, grey, self._hanning)
        if abs(sx) < 0.05 and abs(sy) < 0.05 or abs(sx) > 4 or abs(sy) > 4:
            return log
        matrix = np.array([[1.0, 0.0, -sx], [0.0, 1.0, -sy]])
        shifted = cv2.warpAffine(log, matrix, (log.shape[1], log.shape[0]),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.asarray(shifted, dtype=np.float32).reshape(log.shape)

    def _blocks(self, image: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Median of each block of the region, (..., h, w) -> (..., blocks)."""
        bw, bh = BLOCKS
        h, w = image.shape[-2:]
        hb, wb = h // bh, w // bw
        cut = image[..., :bh * hb, :bw * wb]
        shaped = cut.reshape(*image.shape[:-2], bh, hb, bw, wb).swapaxes(-3, -2)
        return np.asarray(np.median(shaped.reshape(*image.shape[:-2], bh * bw, hb * wb),
                                    axis=-1), dtype=np.float64)

    def _model(self, channel: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The light model's regressors for a channel: per pixel (N x 7) and per block."""
        cached = self._models.get(channel)
        if cached is None:
            ref = self._ref.log[self._window][:, :, channel]
            u, v = self._u, self._v
            columns = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v, ref])
            cached = (columns.reshape(7, -1).T.astype(np.float64), self._blocks(columns).T)
            self._models[channel] = cached
        return cached

    def _fit_light(self, cur: FloatImage, channel: int, usable: npt.NDArray[np.bool_]
                   ) -> tuple[FloatImage, FloatImage, float]:
        """Residual of log(frame) after the light model a(u, v) + gamma * log(reference), with
        a quadratic a; fitted by least median of squares on block medians (goods may cover
        up to half the region), then least squares on the pixels that fit. `usable` marks the
        pixels that are neither clipped nor black. Returns (residual, model, gamma)."""
        h, w = cur.shape
        design, bx = self._model(channel)
        by = self._blocks(cur)
        ridge = np.zeros((7, 7))
        ridge[6, 6] = 1e-2 * len(by)  # pulls gamma towards 1 where the reference is flat
        prior = np.zeros(7)
        prior[6] = ridge[6, 6]
        xs, ys = bx[self._subsets], by[self._subsets]  # (trials, subset, 7), (trials, subset)
        share = LMEDS_SUBSET / len(by)
        xt = xs.transpose(0, 2, 1)
        lhs = xt @ xs + ridge * share + 1e-9 * np.eye(7)
        rhs = xt @ ys[..., None] + (prior * share)[:, None]
        coefficients = np.linalg.solve(lhs, rhs)[..., 0]
        residuals = by[None, :] - coefficients @ bx.T
        best = coefficients[int(np.argmin(np.median(residuals * residuals, axis=1)))]
        values = cur.ravel().astype(np.float64)
        # The pixel fit uses every FIT_STRIDE-th pixel: the light is smooth.
        sample = slice(None, None, FIT_STRIDE)
        d_all, v_all = design[sample], values[sample]
        u_all = usable.ravel()[sample]
        for _ in range(2):
            r = v_all - d_all @ best
            spread = 1.4826 * float(np.median(np.abs(r[u_all])))
            keep = u_all & (np.abs(r) < max(3.0 * spread, 0.04))
            d = d_all[keep]
            best = np.linalg.solve(d.T @ d + ridge * (len(d) / len(by)) + 1e-9 * np.eye(7),
                                   d.T @ v_all[keep] + prior * (len(d) / len(by)))
        residual = values - design @ best
        model = (values - residual).reshape(h, w)
        return (np.asarray(residual.reshape(h, w), dtype=np.float32),
                np.asarray(model, dtype=np.float32), float(best[6]))


@dataclass(frozen=True)
class ThresholdCalibration:
    threshold: float
    max_empty: float  # the largest score of an empty compartment
    min_occupied: float  # the smallest score of an occupied one
    false_empty: int  # occupied examples at or below the threshold
    false_occupied: int  # empty examples above it

    @property
    def separated(self) -> bool:
        return self.max_empty < self.min_occupied


def calibrate_threshold(empty: Sequence[float], occupied: Sequence[float]) -> ThresholdCalibration:
    """A threshold on a score (occupied above it) from examples of both kinds: the geometric
    mean of the largest empty and the smallest occupied score when they separate, else the
    threshold with the fewest errors, ties to the lower one (an occupied compartment called
    empty would record goods as handed over that are still inside)."""
    e = np.sort(np.asarray(empty, dtype=np.float64))
    o = np.sort(np.asarray(occupied, dtype=np.float64))
    if e.size == 0 or o.size == 0 or not np.all(np.isfinite(e)) or not np.all(np.isfinite(o)):
        raise ValueError("calibration needs finite scores of both empty and occupied examples")
    max_empty, min_occupied = float(e[-1]), float(o[0])
    if max_empty < min_occupied:
        low = max(max_empty, 1e-9)
        threshold = math.sqrt(low * min_occupied) if low > 0 else min_occupied / 2
    else:
        candidates = np.unique(np.concatenate([e, o]))
        errors = [int(np.sum(o <= t) + np.sum(e > t)) for t in candidates]
        threshold = float(candidates[int(np.argmin(errors))])
    return ThresholdCalibration(threshold, max_empty, min_occupied,
                                int(np.sum(o <= threshold)), int(np.sum(e > threshold)))


class OccupancyFilter:
    """Reports a new occupancy only after `frames` checks in a row agree (a hand passing over
    the camera, a flicker); UNKNOWN passes at once when checks cannot be made."""

    def __init__(self, frames: int = 3) -> None:
        if frames < 1:
            raise ValueError("frames must be >= 1")
        self.frames = frames
        self.state = Occupancy.UNKNOWN
        self._candidate = Occupancy.UNKNOWN
        self._count = 0

    def update(self, occupancy: Occupancy) -> Occupancy:
        if occupancy is Occupancy.UNKNOWN:
            self.state, self._candidate, self._count = Occupancy.UNKNOWN, occupancy, 0
            return self.state
        if occupancy == self.state:
            self._count = 0
            return self.state
        if occupancy == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = occupancy, 1
        if self._count >= self.frames:
            self.state, self._count = occupancy, 0
        return self.state


@dataclass(frozen=True)
class CheckCalibration:
    area_fraction: float
    edge_fraction: float
    area: ThresholdCalibration
    edge_margin: float  # edge_fraction over the largest edge share of an empty example


def calibrate(empty: Sequence[CompartmentVerdict], occupied: Sequence[CompartmentVerdict],
              edge_margin: float = 1.5) -> CheckCalibration:
    """Both thresholds from verdicts on examples (any thresholds in the checker that made
    them): the structure cue only backs up the appearance cue (goods covering the whole view),
    so its threshold sits `edge_margin` times above every empty example; the appearance
    threshold then separates the empty examples from the occupied ones the structure cue
    does not already catch."""
    known_e = [v for v in empty if v.occupancy is not Occupancy.UNKNOWN]
    known_o = [v for v in occupied if v.occupancy is not Occupancy.UNKNOWN]
    if not known_e or not known_o:
        raise ValueError("calibration needs judged (not UNKNOWN) empty and occupied examples")
    edge = edge_margin * max(max(v.edge_fraction for v in known_e), 1e-4)
    rest = [v.changed_fraction for v in known_o if v.edge_fraction <= edge]
    area = calibrate_threshold([v.changed_fraction for v in known_e],
                               rest or [v.changed_fraction for v in known_o])
    return CheckCalibration(area.threshold, edge, area, edge_margin)
