"""Rays: the one record of rays the package passes around, and how pixels and labels become rays.

Pixel rays: origin = camera centre, direction = R·K⁻¹[u, v, 1] normalised; a label's camera z
becomes the distance `z·‖K⁻¹[u, v, 1]‖` along the unit ray (labels store camera z, rendering returns
distance along the ray: comparing them without that scale is the reference code's depth bug).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np

from renderocc.geometry.grid import Grid

MIN_LABEL_DISTANCE_M = 0.1  # a label closer than this to its camera is sensor noise, not a surface


@dataclass(frozen=True)
class Rays:
    """Rays in one frame: `origins` (N, 3), unit `directions` (N, 3), `ends` (N,) the labelled distance
    along each ray (NaN: no depth, e.g. a dense-mask ray), `batch_index` (N,) which sample each belongs
    to, `label` (N,) the class a label ray names (255: none).

    The package's ray dicts (dataset items, batches) use the same names as keys. Arrays are numpy or
    torch alike; `select` keeps a subset of rows of every field."""

    origins: np.ndarray
    directions: np.ndarray
    ends: np.ndarray | None = None
    batch_index: np.ndarray | None = None
    label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.origins)

    def select(self, rows) -> Rays:
        return Rays(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                       for f in fields(self)})

    def end_points(self) -> np.ndarray:
        return self.origins + self.directions * self.ends[:, None]


@functools.lru_cache(maxsize=256)
def _inverse_intrinsics(k_bytes: bytes) -> np.ndarray:
    """inv(K) of a 3x3 float64 K given as bytes: a dataset has a few K, called per camera per
    sample (QA, training), and LAPACK's per-call overhead dominated those loops."""
    inv = np.linalg.inv(np.frombuffer(k_bytes, np.float64).reshape(3, 3))
    inv.flags.writeable = False
    return inv


def pixel_rays(u: np.ndarray, v: np.ndarray, K: np.ndarray, cam2ego: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origins (N,3), unit directions (N,3), scale (N,) = distance per metre of z) in the ego frame."""
    uv1 = np.stack([np.asarray(u, np.float64), np.asarray(v, np.float64),
                    np.ones(len(u))], axis=-1)
    cam = uv1 @ _inverse_intrinsics(np.asarray(K, np.float64).tobytes()).T
    scale = np.linalg.norm(cam, axis=-1)
    cam2ego = np.asarray(cam2ego, np.float64)
    directions = (cam / scale[:, None]) @ cam2ego[:3, :3].T
    origins = np.broadcast_to(cam2ego[:3, 3], directions.shape).copy()
    return origins, directions, scale


def label_rays(labels: dict, K_by_cam: dict[int, np.ndarray], cam2ego_by_cam: dict[int, np.ndarray]
               ) -> dict[str, np.ndarray]:
    """A label table (`camera`, `u`, `v`, `depth`) → {origins, directions, ends, scale} (float64).

    Per camera index, `pixel_rays` with that camera's original-size K and camera→frame pose, so
    the same rays serve key frames and neighbours (whose cam2ego maps into the key ego frame).
    """
    cam = np.asarray(labels["camera"]).astype(np.int64)
    n = len(cam)
    origins, directions, scale = np.zeros((n, 3)), np.zeros((n, 3)), np.ones(n)
    u, v = np.asarray(labels["u"]), np.asarray(labels["v"])
    for c in np.unique(cam):
        m = cam == c
        origins[m], directions[m], scale[m] = pixel_rays(u[m], v[m], K_by_cam[int(c)], cam2ego_by_cam[int(c)])
    ends = np.asarray(labels["depth"]).astype(np.float64) * scale
    return {"origins": origins, "directions": directions, "ends": ends, "scale": scale}


def ends_inside(origins: np.ndarray, directions: np.ndarray, ends: np.ndarray, grid: Grid) -> np.ndarray:
    """Rays whose labelled end point lies strictly inside the grid box (and ends > 0.1 m): the only
    ones rendering can explain. Training, fit and eval all filter label rays with this."""
    end = origins + directions * ends[:, None]
    return (end > grid.lo).all(1) & (end < grid.hi).all(1) & (ends > MIN_LABEL_DISTANCE_M)
