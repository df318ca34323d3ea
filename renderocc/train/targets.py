"""Training targets as pure functions of label arrays: what the dataset attaches to an item.

Kept apart from `RayDataset` so each rule can be tested on hand-built inputs:
- `lss_depth_target`: nearest LiDAR z per stride×stride feature cell (the LSS depth head's target);
- `sparse_target` (`lidar-sparse`): a discrete voxel set, so it uses the exact traversal and the
  voxel cells of `renderocc.geometry`, never samples along the ray;
- `label_voxel_target` (`loss.label_voxels`): the sample's label rays, key and auxiliary, as a
  voxel set by the same rule from their camera origins;
- `dense_target` (`3d`/`mixed`): Occ3D GT inside a mask (`loss.occ3d_mask`), pooled to the model grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from renderocc.classes import IGNORE, NUM_SEMANTIC, OCCUPIED_UNKNOWN
from renderocc.geometry import Grid
from renderocc.ops import mark_crossed


def lss_depth_target(labels: dict, K_orig: dict[int, np.ndarray], K_in: np.ndarray, hw: Sequence[int],
                     stride: int) -> torch.Tensor:
    """(N, ceil(h/stride), ceil(w/stride)) float32: nearest LiDAR z per feature cell, 0 = no label.

    Label pixels (original image) map to input pixels by the affine K_in·K_orig⁻¹ (resize, crop,
    flip); cell j covers input pixel centres [j·stride − ½, (j+1)·stride − ½).
    """
    h, w = (int(hw[0]) + stride - 1) // stride, (int(hw[1]) + stride - 1) // stride
    out = np.full((len(K_in), h * w), np.inf, np.float32)
    cam = np.asarray(labels["camera"]).astype(np.int64)
    u, v, z = np.asarray(labels["u"]), np.asarray(labels["v"]), np.asarray(labels["depth"])
    for c in np.unique(cam):
        m = cam == c
        M = np.asarray(K_in[c], np.float64) @ np.linalg.inv(np.asarray(K_orig[int(c)], np.float64))
        uv = np.stack([u[m], v[m], np.ones(m.sum())], -1) @ M.T
        j = np.floor((uv[:, 0] + 0.5) / stride).astype(np.int64)
        k = np.floor((uv[:, 1] + 0.5) / stride).astype(np.int64)
        ok = (j >= 0) & (j < w) & (k >= 0) & (k < h)
        np.minimum.at(out[c], k[ok] * w + j[ok], z[m][ok])
    out[np.isinf(out)] = 0
    return torch.from_numpy(out.reshape(len(K_in), h, w))


def occupied(target: torch.Tensor, free: int) -> torch.Tensor:
    """bool: the voxels a 3D target (`sparse_target`, `label_voxel_target`, `dense_target`) calls
    occupied, with a class (below `free`) or without one (OCCUPIED_UNKNOWN)."""
    return (target < free) | (target == OCCUPIED_UNKNOWN)


def sparse_target(origins: np.ndarray, directions: np.ndarray, ends: np.ndarray, label: np.ndarray, grid: Grid,
                  sensor_origin: np.ndarray | None = None, num_classes: int = NUM_SEMANTIC) -> np.ndarray:
    """`lidar-sparse` target, uint8 (X, Y, Z): class 0..C-1 (C = `num_classes`; Occ3D: 0–16), C free,
    254 occupied of unknown class, 255 ignore (no evidence).

    - End voxels: the cell of each ray's end point o + d·ends. With labelled points (class 0–16)
      it takes their majority class by an explicit per-voxel count (ties → smallest class id);
      with only unlabelled points (255) it is OCCUPIED_UNKNOWN (254): something is there, its class
      is unknown (a depth-only store: every end voxel).
    - Free: every voxel the segment from the sensor (`sensor_origin`, else each ray's camera
      origin) towards the end point crosses, exactly (`ops.mark_crossed`), up to one voxel
      (`Grid.edge`) before the end point.
    - End voxels override free: a LiDAR return inside a voxel is evidence it is occupied.
    """
    shape = grid.shape
    tgt = np.full(shape, IGNORE, np.uint8)
    origins, directions = np.asarray(origins, np.float64), np.asarray(directions, np.float64)
    end = origins + directions * np.asarray(ends, np.float64)[:, None]
    start = origins if sensor_origin is None else np.broadcast_to(np.asarray(sensor_origin, np.float64),
                                                                  end.shape)
    seg = end - start
    length = np.linalg.norm(seg, axis=1)
    free_len = length - grid.edge
    go = free_len > 0
    free = np.zeros(shape, bool)
    mark_crossed(free, start[go], seg[go] / length[go, None], free_len[go], grid)
    tgt[free] = num_classes
    ijk, inside = grid.index(end)
    vox = grid.flat(ijk[inside])
    lab = np.asarray(label).astype(np.int64)[inside]
    flat = tgt.reshape(-1)
    flat[vox] = OCCUPIED_UNKNOWN  # every return: occupied, class unknown until a label says otherwise
    known = lab < num_classes
    if known.any():
        uniq, inv = np.unique(vox[known], return_inverse=True)
        counts = np.zeros((len(uniq), num_classes), np.int64)
        np.add.at(counts, (inv, lab[known]), 1)
        flat[uniq] = counts.argmax(1).astype(np.uint8)  # argmax: first maximum = smallest class id
    return tgt


def label_voxel_target(pool: Sequence[np.ndarray], grid: Grid, num_classes: int = NUM_SEMANTIC) -> np.ndarray:
    """uint8 (X, Y, Z) target of `loss.label_voxels` from an `ends_in_grid` pool (origins, directions,
    ends, label, ...): `sparse_target` with each ray's camera as its origin. Only 2D labels go in (a
    pixel, its depth, the camera pose): the same facts the rendered terms read, taken voxel by voxel."""
    origins, directions, ends, label = pool[:4]
    return sparse_target(origins, directions, ends, label, grid, None, num_classes)


def dense_target(semantics: np.ndarray, mask: np.ndarray, shape: Sequence[int], num_classes: int = NUM_SEMANTIC
                 ) -> np.ndarray:
    """Occ3D GT → uint8 `shape` target: GT inside `mask` (mask_camera, mask_lidar or all ones), 255
    elsewhere, pooled by integer factors.

    A coarse voxel takes the majority class of its occupied (0–16) masked sub-voxels (ties →
    smallest id), free (17) if its masked sub-voxels are all free, 255 if none is masked.
    """
    sem = np.asarray(semantics).astype(np.uint8)
    mask = np.asarray(mask).astype(bool)
    X, Y, Z = (int(s) for s in shape)
    if any(a % b for a, b in zip(sem.shape, (X, Y, Z), strict=True)):
        raise ValueError(f"dense_target: {tuple(sem.shape)} labels do not pool onto {(X, Y, Z)} by whole factors")
    f = [a // b for a, b in zip(sem.shape, (X, Y, Z), strict=True)]
    if f == [1, 1, 1]:
        return np.where(mask, sem, IGNORE).astype(np.uint8)
    blk = sem.reshape(X, f[0], Y, f[1], Z, f[2]).transpose(0, 2, 4, 1, 3, 5).reshape(X, Y, Z, -1)
    mblk = mask.reshape(X, f[0], Y, f[1], Z, f[2]).transpose(0, 2, 4, 1, 3, 5).reshape(X, Y, Z, -1)
    occ = np.where(mblk & (blk < num_classes), blk, num_classes + 1).astype(np.int64)
    counts = np.stack([(occ == c).sum(-1) for c in range(num_classes)], -1)
    out = np.where(counts.max(-1) > 0, counts.argmax(-1), num_classes).astype(np.uint8)
    return np.where(mblk.any(-1), out, IGNORE).astype(np.uint8)
