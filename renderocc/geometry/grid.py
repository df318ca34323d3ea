"""The voxel grid every part shares: one frozen `Grid`, its checks, and how it meets a label grid.

A grid is an axis-aligned box in the LiDAR-keyframe ego frame, cut into `shape` voxels of edge
`voxel` (metres per axis), indexed `[x, y, z]`. Voxel i covers [lo + i·voxel, lo + (i+1)·voxel)
and its values live at its centre lo + (i + ½)·voxel (the Occ3D convention).

Plain data files (store manifest, config tables, checkpoints, metrics) write a grid as the
field's record `{"pc_range": [6], "voxel_size": [3], "shape": [3]}` (mmdetection3d's names);
`Grid.from_record` / `Grid.to_record` are the one translation between the two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from renderocc.geometry import sampling

TILE_TOLERANCE_M = 1e-4   # shape·voxel may miss the box extent by this much (float rounding of a config)
MAX_VOXELS = 1 << 26      # 67 M voxels (the Occ3D grid has 0.64 M): a larger grid is a typo, not a run


class GridError(ValueError):
    """A grid that cannot exist (bad box, voxel or shape) or cannot be scored against a label grid."""


def _floats(values: Sequence[float] | float, n: int, what: str) -> tuple[float, ...]:
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = [values] * n if what == "voxel" else [values]
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise GridError(f"grid {what} {values!r}: expected {n} numbers") from None
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise GridError(f"grid {what} {list(values)}: expected {n} finite numbers")
    return out


def _check_box_and_voxel(box: tuple[float, ...], voxel: tuple[float, ...]) -> None:
    if any(box[a] >= box[a + 3] for a in range(3)):
        raise GridError(f"grid box {list(box)}: expected xmin, ymin, zmin, xmax, ymax, zmax with min < max")
    if min(voxel) <= 0:
        raise GridError(f"grid voxel {list(voxel)}: edges must be positive")


@dataclass(frozen=True)
class Grid:
    """A voxel grid: `box` (xmin, ymin, zmin, xmax, ymax, zmax), `voxel` edges (3), `shape` (3).

    Checked when built: a finite box with lo < hi, positive edges, and shape·voxel tiling the box.
    """

    box: tuple[float, float, float, float, float, float]
    voxel: tuple[float, float, float]
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        box = _floats(self.box, 6, "box")
        voxel = _floats(self.voxel, 3, "voxel")
        try:
            shape = tuple(int(s) for s in self.shape)
        except (TypeError, ValueError):
            raise GridError(f"grid shape {self.shape!r}: expected 3 integers") from None
        if len(shape) != 3:
            raise GridError(f"grid shape {list(shape)}: expected 3 integers")
        _check_box_and_voxel(box, voxel)
        for a in range(3):
            extent = box[a + 3] - box[a]
            if shape[a] < 1 or abs(shape[a] * voxel[a] - extent) > TILE_TOLERANCE_M:
                raise GridError(f"grid voxel {voxel[a]:g} m does not tile the box {list(box)} on axis "
                                f"{'xyz'[a]} ({extent:g} m)")
        if math.prod(shape) > MAX_VOXELS:
            raise GridError(f"grid {list(shape)} has {math.prod(shape):,} voxels (at most {MAX_VOXELS:,}): "
                            f"voxel {list(voxel)} is too small for the box")
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "voxel", voxel)
        object.__setattr__(self, "shape", shape)

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def tiling(cls, box: Sequence[float], voxel: Sequence[float] | float) -> Grid:
        """The grid whose voxels tile `box` (shape derived); GridError when they do not."""
        b, v = _floats(box, 6, "box"), _floats(voxel, 3, "voxel")
        _check_box_and_voxel(b, v)  # before dividing by the edges
        counts = [(b[a + 3] - b[a]) / v[a] for a in range(3)]
        if max(counts) > MAX_VOXELS:  # also keeps round() off an infinite count
            raise GridError(f"grid voxel {list(v)} is too small for the box {list(b)}")
        return cls(b, v, tuple(max(1, round(c)) for c in counts))

    @classmethod
    def from_record(cls, record: Mapping) -> Grid:
        """A grid from plain data `{"pc_range", "voxel_size", "shape"}` (a store manifest, a config)."""
        try:
            return cls(record["pc_range"], record["voxel_size"], record["shape"])
        except KeyError as e:
            raise GridError(f"grid record lacks {e.args[0]!r}") from None

    def to_record(self) -> dict:
        """Plain JSON-able data: `{"pc_range", "voxel_size", "shape"}` (lists)."""
        return {"pc_range": list(self.box), "voxel_size": list(self.voxel), "shape": list(self.shape)}

    # -- measures ------------------------------------------------------------------------------
    @property
    def lo(self) -> np.ndarray:
        return np.asarray(self.box[:3], np.float64)

    @property
    def hi(self) -> np.ndarray:
        return np.asarray(self.box[3:], np.float64)

    @property
    def edge(self) -> float:
        """"The" voxel size wherever one length stands for a voxel (margins, opacity over one voxel):
        the longest edge, so a margin of one voxel clears a cell along every axis."""
        return max(self.voxel)

    @property
    def num_voxels(self) -> int:
        return math.prod(self.shape)

    def text(self) -> str:
        """`[200, 200, 16] @ 0.4 m` (or `0.4 × 0.4 × 0.2 m`): how reports name a grid."""
        v = f"{self.voxel[0]:g}" if len(set(self.voxel)) == 1 else " × ".join(f"{e:g}" for e in self.voxel)
        return f"{list(self.shape)} @ {v} m"

    def kernel_args(self) -> tuple[list[float], list[float]]:
        """(box (6), voxel (3)) as the compiled ops take them."""
        return list(self.box), list(self.voxel)

    # -- cells ---------------------------------------------------------------------------------
    def axis_centres(self, axis: int) -> np.ndarray:
        """(N,) float64 centres lo + (i + ½)·voxel along one axis."""
        return self.box[axis] + (np.arange(self.shape[axis]) + 0.5) * self.voxel[axis]

    def centres(self) -> np.ndarray:
        """(X, Y, Z, 3) float64 voxel centres: where voxel values live for trilinear sampling."""
        return np.stack(np.meshgrid(*(self.axis_centres(a) for a in range(3)), indexing="ij"), axis=-1)

    def index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ijk (..., 3) int64 = floor((p − lo)/voxel), inside (...,) bool: the cell lies in the grid)."""
        idx = np.floor((np.asarray(points, np.float64) - self.lo) / np.asarray(self.voxel)).astype(np.int64)
        inside = ((idx >= 0) & (idx < np.asarray(self.shape, np.int64))).all(-1)
        return idx, inside

    def flat(self, ijk: np.ndarray) -> np.ndarray:
        """C-order flat index of [x, y, z] voxel indices (callers mask out-of-grid ones)."""
        return (ijk[..., 0] * self.shape[1] + ijk[..., 1]) * self.shape[2] + ijk[..., 2]

    # -- meeting a label grid ------------------------------------------------------------------
    def coarsens(self, labels: Grid) -> Scoring:
        """How this (model) grid is scored against `labels` (e.g. the store's Occ3D grid).

        - same grid: voxel for voxel;
        - pool: the same box, every edge a whole multiple of the label edge: 3D labels are pooled onto
          this grid for training, and each model voxel is repeated over its label voxels to score;
        - interpolate: every edge at most the label edge, and the box covers the label box: model
          values are trilinearly interpolated at the label voxels' centres (UniOcc's 0.32 m grid
          against 0.4 m labels), for the 3D loss and for scoring.
        Anything else (a coarser edge that is not a whole multiple, a box that misses part of the
        labels) cannot be scored: GridError saying why.
        """
        if self == labels:
            return Scoring("same", self, labels, (1, 1, 1))
        ratio = [self.voxel[a] / labels.voxel[a] for a in range(3)]
        same_box = all(abs(self.box[i] - labels.box[i]) <= TILE_TOLERANCE_M for i in range(6))
        factor = tuple(round(r) for r in ratio)
        whole = all(f >= 1 and abs(f * labels.voxel[a] - self.voxel[a]) <= TILE_TOLERANCE_M
                    for a, f in enumerate(factor))
        if same_box and whole:
            return Scoring("pool", self, labels, factor)
        covers = all(self.box[a] <= labels.box[a] + TILE_TOLERANCE_M
                     and self.box[a + 3] >= labels.box[a + 3] - TILE_TOLERANCE_M for a in range(3))
        finer = all(r <= 1 + 1e-9 for r in ratio)
        if finer and covers:
            return Scoring("interpolate", self, labels, (1, 1, 1))
        if not covers:
            why = f"its box {list(self.box)} does not cover the labels' box {list(labels.box)}"
        elif not same_box and whole:
            why = f"a coarser grid must share the labels' box {list(labels.box)} to pool them"
        else:
            why = (f"voxel {list(self.voxel)} m is neither a whole multiple of the labels' "
                   f"{list(labels.voxel)} m on every axis (pooling) nor at most it on every axis (interpolation)")
        raise GridError(f"model grid {self.text()} cannot be scored against the label grid {labels.text()}: {why}")


@dataclass(frozen=True)
class Scoring:
    """How a model grid meets a label grid (from `Grid.coarsens`): `mode` same | pool | interpolate,
    `factor` label voxels per model voxel per axis when pooling."""

    mode: Literal["same", "pool", "interpolate"]
    model: Grid
    labels: Grid
    factor: tuple[int, int, int]

    @property
    def target_grid(self) -> Grid:
        """Where 3D training targets live: the model grid (labels pooled onto it), or the label grid
        when model values are interpolated to it."""
        return self.labels if self.mode == "interpolate" else self.model

    def to_labels(self, volume: torch.Tensor) -> torch.Tensor:
        """A model-grid volume (C, X, Y, Z) on the label grid (C, X', Y', Z'): itself, each voxel
        repeated over its label voxels (pool), or trilinear at the label centres (interpolate)."""
        if self.mode == "same":
            return volume
        if self.mode == "pool":
            out = volume
            for a, f in enumerate(self.factor):
                out = out.repeat_interleave(f, dim=a + 1) if f > 1 else out
            return out
        centres = torch.as_tensor(self.labels.centres(), dtype=volume.dtype, device=volume.device)
        return sampling.trilinear(volume, centres, self.model).permute(3, 0, 1, 2)

    def fields_to_labels(self, density: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A model's density (X, Y, Z) and logits (X, Y, Z, C) on the label grid, in one `to_labels`
        pass: what a finer grid's 3D loss and scores read, and what a coarser grid's repeat gives."""
        both = self.to_labels(torch.cat([density[None], logits.permute(3, 0, 1, 2)]))
        return both[0], both[1:].permute(1, 2, 3, 0)

    def to_labels_numpy(self, volume: np.ndarray) -> np.ndarray:
        """`to_labels` for an [x, y, z, ...] numpy array of classes or flags (pool: repeat;
        interpolate: the model voxel holding each label centre)."""
        if self.mode == "same":
            return volume
        if self.mode == "pool":
            out = volume
            for a, f in enumerate(self.factor):
                out = np.repeat(out, f, axis=a) if f > 1 else out
            return out
        ijk, _ = self.model.index(self.labels.centres())
        ijk = np.clip(ijk, 0, np.asarray(self.model.shape) - 1)
        return volume[ijk[..., 0], ijk[..., 1], ijk[..., 2]]


OCC3D_GRID = Grid((-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), (0.4, 0.4, 0.4), (200, 200, 16))
"""Occ3D-nuScenes: 200 × 200 × 16 voxels of 0.4 m over [-40, 40] × [-40, 40] × [-1, 5.4] m."""
