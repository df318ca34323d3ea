"""BEV data augmentation (BEVDet's "bda"): one random transform of the grid frame per training item.

    B = T(c) · diag(s, s, 1) · Rz(θ) · F(flip_x, flip_y) · T(−c),   c = (box centre x, box centre y, 0)

acts on everything that lives in the key-ego frame (= the grid frame), so an augmented item is the
same scene seen by a moved grid and the rendering supervision stays consistent with the features:

- lifted image features: `cam2ego ← B·cam2ego` for every camera. LiftSplat places each frustum
  point with the intrinsics and cam2ego, so the splatted volume moves exactly by B; images,
  intrinsics and the LSS depth targets (camera-frame z) do not change;
- rays (label rays, dense-mask rays, free beams): origin ← B·o, direction ← L·d / ‖L·d‖ (L the
  linear part of B), labelled distance ← distance·‖L·d‖, so the labelled end point maps to B·end.
  The scale acts on x and y only: ‖L·d‖ is s for a horizontal ray and 1 for a vertical one. Grid
  filters (`ends_inside`, `crosses_grid`) run on the transformed rays: a rotation moves some ends
  out of the box and brings others in;
- voxel label grids: nearest-neighbour gather at B⁻¹·(voxel centre), 255 where that falls outside
  the grid. Flips about the box's own centre are exact index flips.

z is never moved: the grid's height range is tight (Occ3D: 6.4 m) and its layers are the ground's,
so BEVDet's isotropic scale is taken in x and y only. c is the box centre, so a flip maps even an
off-centre box onto itself. Recipe (BEVDet): flips with probability ½ per axis, rotation within
±22.5°, scale in [0.95, 1.05]. The draw comes from its own stream of `(seed, epoch, index)`, so
switching augmentation on changes neither the image augmentation nor the rays drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from renderocc.classes import IGNORE
from renderocc.config import DataConfig
from renderocc.geometry import Grid

BEV_STREAM = 0xBDA  # tag of an item's BEV-augmentation stream: rng([seed, epoch, index, tag]); never 0


@dataclass(frozen=True)
class BevAug:
    """One drawn transform: flips, rotation `angle` (degrees, counter-clockwise about z), x-y `scale`,
    all about `centre` (x, y) in that order (flip first)."""

    flip_x: bool = False
    flip_y: bool = False
    angle: float = 0.0
    scale: float = 1.0
    centre: tuple[float, float] = (0.0, 0.0)

    @property
    def linear(self) -> np.ndarray:
        """(3, 3) float64 L = diag(s, s, 1)·Rz(θ)·F."""
        t = math.radians(self.angle)
        cos, sin = math.cos(t), math.sin(t)
        rot = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
        flip = np.diag([-1.0 if self.flip_x else 1.0, -1.0 if self.flip_y else 1.0, 1.0])
        return np.diag([self.scale, self.scale, 1.0]) @ rot @ flip

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) float64 B = T(c)·L·T(−c)."""
        c = np.array([*self.centre, 0.0])
        out = np.eye(4)
        out[:3, :3] = L = self.linear
        out[:3, 3] = c - L @ c
        return out

    @property
    def is_identity(self) -> bool:
        return not (self.flip_x or self.flip_y) and self.angle == 0.0 and self.scale == 1.0

    def points(self, p: np.ndarray) -> np.ndarray:
        """B·p for (..., 3) points (float64)."""
        M = self.matrix
        return np.asarray(p, np.float64) @ M[:3, :3].T + M[:3, 3]

    def poses(self, cam2ego: np.ndarray) -> np.ndarray:
        """B·cam2ego for (..., 4, 4) poses: the lifted features then move by B."""
        return self.matrix @ np.asarray(cam2ego, np.float64)

    def rays(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B·o, unit L·d/‖L·d‖, stretch ‖L·d‖) of rays with unit directions (float64): a distance t
        along a ray becomes t·stretch along the moved ray (NaN, no depth, stays NaN)."""
        v = np.asarray(directions, np.float64) @ self.linear.T
        stretch = np.linalg.norm(v, axis=-1)
        return self.points(origins), v / stretch[..., None], stretch

    def ray_dict(self, rays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A `geometry.label_rays` dict moved by B: origins, directions, ends (and `scale`, the
        distance per metre of camera z) follow; other keys (label, ...) are kept."""
        o, d, stretch = self.rays(rays["origins"], rays["directions"])
        out = {**rays, "origins": o, "directions": d, "ends": np.asarray(rays["ends"], np.float64) * stretch}
        if "scale" in rays:
            out["scale"] = np.asarray(rays["scale"], np.float64) * stretch
        return out

    def voxels(self, volume: np.ndarray, grid: Grid, fill: int | float = IGNORE) -> np.ndarray:
        """An [x, y, z, ...] array on `grid` moved by B: out[v] = volume[voxel holding B⁻¹·centre(v)],
        `fill` where that lies outside the grid (nearest neighbour: labels stay labels).

        z is untouched, so one x-y gather serves every layer. Flips about the grid's own centre (no
        rotation, no scale) are index flips, the same values the gather gives."""
        volume = np.asarray(volume)
        if tuple(volume.shape[:3]) != grid.shape:
            raise ValueError(f"volume {tuple(volume.shape)} does not match the grid's shape {grid.shape}")
        if self.is_identity:
            return volume.copy()
        mid = (grid.lo[:2] + grid.hi[:2]) / 2
        if self.angle == 0.0 and self.scale == 1.0 and np.allclose(mid, self.centre, rtol=0, atol=1e-9):
            axes = tuple(a for a, f in enumerate((self.flip_x, self.flip_y)) if f)
            return np.ascontiguousarray(np.flip(volume, axes))
        c = np.asarray(self.centre, np.float64)
        A_inv = np.linalg.inv(self.linear[:2, :2])
        xy = np.stack(np.meshgrid(grid.axis_centres(0), grid.axis_centres(1), indexing="ij"), -1)  # (X, Y, 2)
        src = (xy - c) @ A_inv.T + c
        ij = np.floor((src - grid.lo[:2]) / np.asarray(grid.voxel[:2])).astype(np.int64)
        inside = ((ij >= 0) & (ij < np.asarray(grid.shape[:2]))).all(-1)
        ij = np.where(inside[..., None], ij, 0)
        out = volume[ij[..., 0], ij[..., 1]]
        out[~inside] = fill
        return out


def bev_aug_on(d: DataConfig) -> bool:
    """Whether `data.bev_flip / bev_rotate / bev_scale` ask for any BEV augmentation."""
    return bool(d.bev_flip) or d.bev_rotate > 0 or tuple(d.bev_scale) != (1.0, 1.0)


def draw_bev_aug(d: DataConfig, grid: Grid, seed: int, epoch: int, index: int) -> BevAug | None:
    """The transform of training item `(epoch, index)`, or None when augmentation is off or the draw
    is the identity (skipped, not applied: the item is then bit-identical to an unaugmented one).

    Drawn from its own stream `rng([seed, epoch, index, BEV_STREAM])`, in a fixed order (flip x,
    flip y, angle, scale), so resume and DDP see the same transform whoever builds the item."""
    if not bev_aug_on(d):
        return None
    rng = np.random.default_rng([int(seed), int(epoch), int(index), BEV_STREAM])
    flip_x = bool(d.bev_flip and rng.random() < 0.5)
    flip_y = bool(d.bev_flip and rng.random() < 0.5)
    angle = float(rng.uniform(-d.bev_rotate, d.bev_rotate)) if d.bev_rotate > 0 else 0.0
    lo, hi = (float(v) for v in d.bev_scale)
    scale = float(rng.uniform(lo, hi)) if hi > lo else lo
    centre = ((grid.box[0] + grid.box[3]) / 2, (grid.box[1] + grid.box[4]) / 2)
    aug = BevAug(flip_x, flip_y, angle, scale, centre)
    return None if aug.is_identity else aug
