"""What the labels determine with no optimisation at all: a voxelisation baseline for `fit`.

A voxel that holds the end point of a label ray is occupied, with the majority class of the
classed end points in it; a voxel the rays only cross is free; everything else is unobserved and
predicted free (as every Occ3D prediction must state a class or free). If the optimised fit,
which minimises the training losses over the same rays, scores below this, the fit measures its
optimiser, not the labels.
"""

from __future__ import annotations

import numpy as np

from renderocc.geometry import Grid
from renderocc.ops import mark_crossed
from renderocc.train.dataset import ends_in_grid

CROSS_MARGIN = 1e-3  # metres short of the end point: the crossed segment stops before the end voxel


def voxelize_rays(origins: np.ndarray, directions: np.ndarray, ends: np.ndarray, labels: np.ndarray, grid: Grid,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes uint8 (X, Y, Z): the majority class of the classed end points per voxel, `num_classes`
    = free elsewhere; crossed bool (X, Y, Z): voxels a ray passes before its end point)."""
    ends = np.asarray(ends, np.float64)
    labels = np.asarray(labels).astype(np.int64)
    ijk, inside = grid.index(origins + directions * ends[:, None])
    classed = inside & (labels >= 0) & (labels < num_classes)
    pairs, counts = np.unique(grid.flat(ijk[classed]) * num_classes + labels[classed], return_counts=True)
    vox, cls = pairs // num_classes, pairs % num_classes
    order = np.lexsort((cls, -counts, vox))  # per voxel: the most votes first, ties to the lower class
    vox, cls = vox[order], cls[order]
    first = np.r_[True, vox[1:] != vox[:-1]] if len(vox) else np.zeros(0, bool)
    out = np.full(int(np.prod(grid.shape)), num_classes, np.uint8)
    out[vox[first]] = cls[first]
    crossed = np.zeros(grid.shape, bool)
    mark_crossed(crossed, origins, directions, np.maximum(ends - CROSS_MARGIN, 0.0), grid)
    return out.reshape(grid.shape), crossed


def voxelize_frames(frames: list[tuple[dict, float]], grid: Grid, num_classes: int) -> np.ndarray:
    """The baseline's class grid from a sample's label frames (the key frame and its neighbours'
    rays that end inside the grid: the rays the optimised fit draws from)."""
    o, d, dist, lab, *_ = ends_in_grid(frames, grid)
    classes, _ = voxelize_rays(o, d, dist, lab, grid, num_classes)
    return classes
