"""RayIoU (SparseOcc, ECCV 2024): occupancy scored along LiDAR-like rays instead of per voxel.

Voxel mIoU rewards thick surfaces (a wall predicted three voxels deep still covers the true
one). RayIoU casts the rays a LiDAR would, from several positions of the ego along the scene,
and asks whether the first surface each ray meets has the right class at the right distance.

The protocol, as SparseOcc's `loaders/ray_metrics.py`, `lib/dvr` and `loaders/ego_pose_dataset.py`
define it (this is an independent implementation of it):
- origins: the LiDAR position of every keyframe of the sample's scene, in the sample's ego frame,
  kept when |x| and |y| < 39 m; when more than 8 remain, 8 picked at round(linspace(0, n-1, 8));
- rays: 39 pitch angles (10 from -atan-spaced steep angles, then evenly up to the nuScenes LiDAR's
  upper edge of 0.21 rad) × 360 azimuths, 14,040 per origin; no camera mask;
- walk: exact voxel traversal to the first voxel that is not free; the ray's distance is where it
  leaves that voxel, its class that voxel's; a ray meeting nothing ends at the box exit as free;
- valid rays: those whose GT class is not free; a true positive has the same class and
  |distance error| < τ, τ ∈ {1, 2, 4} m; counts are summed over the dataset, IoU per class =
  TP / (GT + pred − TP); RayIoU@τ = nanmean over classes 0..16; RayIoU = mean over τ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from renderocc.classes import FREE, NUM_SEMANTIC, OCC3D_CLASSES
from renderocc.geometry import Grid
from renderocc.ops import first_hits

THRESHOLDS = (1.0, 2.0, 4.0)
ORIGIN_RANGE = 39.0   # |x|, |y| of an origin in the sample's ego frame (m)
MAX_ORIGINS = 8
LIDAR_TOP_PITCH = 0.21  # rad: the nuScenes LiDAR's upper field-of-view edge
N_CLASSES = NUM_SEMANTIC + 1  # counts kept for free too; it is left out of the mean


def pitch_angles() -> np.ndarray:
    """The 39 pitch angles (rad, ascending): -(π/2 − atan(k)) for k = 1..10, then the last gap
    repeated until the angle reaches the LiDAR's upper edge."""
    angles = [-(np.pi / 2 - np.arctan(k)) for k in range(1, 11)]
    while angles[-1] < LIDAR_TOP_PITCH:
        angles.append(angles[-1] + (angles[-1] - angles[-2]))
    return np.array(angles)


def lidar_directions() -> np.ndarray:
    """(14040, 3) unit directions: every pitch × azimuths 0..359° (pitch-major order)."""
    pitch = pitch_angles()[:, None]
    az = np.deg2rad(np.arange(360.0))[None, :]
    d = np.stack([np.cos(pitch) * np.cos(az), np.cos(pitch) * np.sin(az),
                  np.broadcast_to(np.sin(pitch), (len(pitch), 360))], axis=-1)
    return d.reshape(-1, 3)


def scene_origins(ego_poses: np.ndarray, lidar2ego: np.ndarray, ref: int) -> np.ndarray:
    """(T ≤ 8, 3) ray origins for keyframe `ref` of a scene.

    `ego_poses` (N, 4, 4) key-ego → global and `lidar2ego` (N, 4, 4) of the scene's keyframes
    in time order: each keyframe's LiDAR position in keyframe `ref`'s ego frame, those within
    |x|, |y| < 39 m, then 8 of them at rounded linspace positions.
    """
    ego_poses = np.asarray(ego_poses, np.float64)
    lidar2ego = np.asarray(lidar2ego, np.float64)
    ref_from_global = np.linalg.inv(ego_poses[ref])
    pos = np.einsum("ij,njk,nk->ni", ref_from_global, ego_poses, lidar2ego[:, :, 3])[:, :3]
    pos = pos[(np.abs(pos[:, 0]) < ORIGIN_RANGE) & (np.abs(pos[:, 1]) < ORIGIN_RANGE)]
    if len(pos) > MAX_ORIGINS:
        pos = pos[np.round(np.linspace(0, len(pos) - 1, MAX_ORIGINS)).astype(np.int64)]
    return pos


def cast(pred: np.ndarray, gt: np.ndarray, origins: np.ndarray, grid: Grid,
         directions: np.ndarray | None = None, threads: int | None = None, free: int = FREE,
         backend: str = "auto"
         ) -> dict[str, np.ndarray]:
    """Walk every origin × direction ray through both class grids once.

    The walk runs in the C++ extension (numpy when it is unavailable; `backend` as
    `ops.first_hits`) on up to `threads` threads. Returns per valid ray (GT class not
    free) `gt_class`, `gt_dist`, `pred_class`, `pred_dist`.
    """
    dirs = lidar_directions() if directions is None else directions
    o = np.repeat(np.asarray(origins, np.float64).reshape(-1, 3), len(dirs), axis=0)
    d = np.tile(dirs, (len(origins), 1))
    pred, gt = np.asarray(pred), np.asarray(gt)
    layers = np.stack([gt != free, pred != free])
    voxel, dist, _ = first_hits(layers, o, d, grid, backend=backend, threads=threads)
    ok = voxel[0] >= 0  # rays that miss the box (origins outside it) are not cast
    gt_cls = gt.reshape(-1)[voxel[0][ok]].astype(np.int64)
    pred_cls = pred.reshape(-1)[voxel[1][ok]].astype(np.int64)
    valid = gt_cls != free
    return {"gt_class": gt_cls[valid], "gt_dist": dist[0][ok][valid],
            "pred_class": pred_cls[valid], "pred_dist": dist[1][ok][valid]}


def _counts(cls: np.ndarray, n: int = N_CLASSES) -> np.ndarray:
    cls = cls[(cls >= 0) & (cls < n)]
    return np.bincount(cls, minlength=n).astype(np.int64)


@dataclass
class RayIoU:
    """RayIoU counts accumulated over samples; `compute` turns them into the metric."""

    grid: Grid
    names: list[str] = field(default_factory=lambda: list(OCC3D_CLASSES))  # the vocabulary, free last
    samples: int = 0
    rays: int = 0

    def __post_init__(self) -> None:
        self.directions = lidar_directions()
        n = len(self.names)
        self.gt, self.pred = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.tp = np.zeros((len(THRESHOLDS), n), np.int64)

    def update(self, pred, gt, origins: np.ndarray) -> None:
        """Add one sample: class grids (free = the last name) [x, y, z] and its (T, 3) origins."""
        n = len(self.names)
        r = cast(pred, gt, origins, self.grid, self.directions, free=n - 1)
        self.gt += _counts(r["gt_class"], n)
        self.pred += _counts(r["pred_class"], n)
        same = r["gt_class"] == r["pred_class"]
        err = np.abs(r["pred_dist"] - r["gt_dist"])
        for j, tau in enumerate(THRESHOLDS):
            self.tp[j] += _counts(r["gt_class"][same & (err < tau)], n)
        self.samples += 1
        self.rays += len(r["gt_class"])

    def compute(self) -> dict:
        """rayiou, rayiou_1/2/4 and rayiou_per_class {class: {"1": .., "2": .., "4": ..}}."""
        n_sem = len(self.names) - 1
        union = (self.gt + self.pred)[None, :] - self.tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, self.tp / np.where(union > 0, union, 1), np.nan)[:, :n_sem]
        per_tau = [float(np.nanmean(row)) if np.isfinite(row).any() else float("nan") for row in iou]
        out = {f"rayiou_{tau:g}": v for tau, v in zip(THRESHOLDS, per_tau, strict=True)}
        out["rayiou"] = float(np.mean(per_tau))
        out["rayiou_per_class"] = {
            name: {f"{tau:g}": (None if np.isnan(iou[j, c]) else float(iou[j, c]))
                   for j, tau in enumerate(THRESHOLDS)}
            for c, name in enumerate(self.names[:n_sem])}
        out["rayiou_rays"] = self.rays
        out["rayiou_samples"] = self.samples
        return out
