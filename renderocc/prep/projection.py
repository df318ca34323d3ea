"""LiDAR → camera projection for all cameras at once, z-buffered, devkit-compatible.

One composed 4×4 per (LiDAR frame, camera): cam ← ego(t_cam) ← global ← ego(t_lidar) ← lidar,
folded with K into one 3×4 per camera: a float32 GEMM over all points and cameras culls, float64
recomputes the survivors (the devkit's precision or better). Filters match
`NuScenesExplorer.map_pointcloud_to_image`: depth > min_depth and 1 < u < W-1, 1 < v < H-1 with
u, v = (K p)_xy / z in ORIGINAL image pixels. Then one point per pixel: the nearest.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

# Occlusion filter (LiDAR–camera parallax): a point is hidden when some point within
# ~OCC_CELL px (original image) is nearer than OCC_RATIO × its depth.
OCC_CELL = 4
OCC_WINDOW = 3
OCC_RATIO = 0.8
# Float32 culling slack (relative): far above float32 error (~1e-6), far below a pixel.
CULL_MARGIN = 1e-2


@dataclass
class Projected:
    """Kept projections: one entry per (point, camera) pair."""

    cam: np.ndarray      # int8 camera index
    point: np.ndarray    # int64 index into the input points
    u: np.ndarray        # float64 original-image pixels
    v: np.ndarray
    depth: np.ndarray    # float64 camera z (m)

    def take(self, idx: np.ndarray) -> Projected:
        return Projected(self.cam[idx], self.point[idx], self.u[idx], self.v[idx], self.depth[idx])


def lidar_to_cam(lidar2key: np.ndarray, cam2key: np.ndarray) -> np.ndarray:
    """(C, 4, 4) LiDAR → camera transforms: inv(camera → key-ego) @ (LiDAR → key-ego)."""
    return np.linalg.inv(cam2key) @ lidar2key[None]


def project(points: np.ndarray, lidar2cam: np.ndarray, K: np.ndarray, sizes: np.ndarray,
            min_depth: float = 1.0) -> Projected:
    """Project (N, ≥3) LiDAR points into C cameras; keep exactly what the devkit keeps.

    lidar2cam (C, 4, 4), K (C, 3, 3), sizes (C, 2) as (W, H) of the original images. A float32
    pass over all (point, camera) pairs culls with a generous margin (no division: 1 < x/z < W-1
    ⟺ z < x < (W-1) z); the survivors (~1 camera per point) are projected again in float64 and
    tested with the devkit's exact rule. Output is grouped by camera.
    """
    P = np.einsum("cij,cjk->cik", K, lidar2cam[:, :3, :])           # (C, 3, 4) = K [R | t]
    n_cams, n_pts = len(P), len(points)
    xyz1_t = np.empty((4, n_pts), dtype=np.float32)                 # homogeneous, (4, N)
    xyz1_t[:3] = points[:, :3].T
    xyz1_t[3] = 1.0
    # Cull on x and z only (points left/right of or behind a camera). Both bounds are linear in
    # the point, so the GEMM yields them directly: a = x - (1-m) z > 0 and b = (W-1+m) z - x > 0.
    W = sizes[:, 0:1]
    A = np.stack([P[:, 0] - (1 - CULL_MARGIN) * P[:, 2], (W - 1 + CULL_MARGIN) * P[:, 2] - P[:, 0]], 1)
    ab = (A.reshape(-1, 4).astype(np.float32) @ xyz1_t).reshape(n_cams, 2, n_pts)
    cand = (ab[:, 0] > 0) & (ab[:, 1] > 0)
    c, n = np.divmod(np.flatnonzero(cand), n_pts)                   # sorted by camera
    pts = np.take(xyz1_t[:3], n, axis=1).astype(np.float64)         # exact: float32 → float64
    cam = np.empty((3, len(n)))
    bounds = np.searchsorted(c, np.arange(n_cams + 1))
    for k in range(n_cams):
        s = slice(bounds[k], bounds[k + 1])
        cam[:, s] = P[k, :, :3] @ pts[:, s] + P[k, :, 3:]
    zc = cam[2]
    u = cam[0] / zc
    v = cam[1] / zc
    ok = np.flatnonzero((zc > min_depth) & (u > 1) & (u < sizes[c, 0] - 1) & (v > 1)
                        & (v < sizes[c, 1] - 1))
    return Projected(c[ok].astype(np.int8), n[ok], u[ok], v[ok], zc[ok])


def pixel_keys(p: Projected, sizes: np.ndarray, cell: int = 1) -> np.ndarray:
    """A unique int64 per (camera, pixel cell); cells of `cell`×`cell` original pixels."""
    wmax = int(sizes[:, 0].max()) // cell + 1
    hmax = int(sizes[:, 1].max()) // cell + 1
    px = p.u.astype(np.int64) // cell      # u, v > 1: truncation is floor
    py = p.v.astype(np.int64) // cell
    return (p.cam.astype(np.int64) * hmax + py) * wmax + px


def zbuffer(p: Projected, sizes: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the nearest projection per (camera, original-image pixel).

    Collisions are rare at full resolution, so instead of sorting everything: scatter each
    projection's index into a small reusable hash table (pixel key mod 2^k, cache-resident), read
    it back to find the projections that share a slot with another, and resolve only those
    exactly (by true pixel key, then depth).
    """
    if len(p.depth) == 0:
        return np.zeros(0, dtype=np.int64)
    key = pixel_keys(p, sizes)
    table = _hash_table(len(key))
    slot = key & (len(table) - 1)
    idx = np.arange(len(key), dtype=np.int32)
    table[slot] = idx
    lost = np.flatnonzero(table[slot] != idx)          # another projection used this slot too
    if len(lost) == 0:
        table[slot] = -1
        return idx.astype(np.int64)
    table[slot[lost]] = -2                             # mark the slots used more than once
    shared = np.flatnonzero(table[slot] == -2)
    table[slot] = -1
    keep = np.ones(len(key), dtype=bool)
    keep[shared] = False
    keep[shared[zbuffer_keys(key[shared], p.depth[shared])]] = True
    return np.flatnonzero(keep)


_TABLES = threading.local()   # one table per thread: prep computes samples in several threads


def _hash_table(n: int) -> np.ndarray:
    """This thread's int32 table of -1s (≥ 16n slots, a power of two), restored to -1 after use."""
    size = 1 << max(12, int(np.ceil(np.log2(16 * max(n, 1)))))
    table = getattr(_TABLES, "table", None)
    if table is None or len(table) < size:
        table = _TABLES.table = np.full(size, -1, dtype=np.int32)
    return table[:size]


def zbuffer_keys(key: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Indices of the smallest depth per key, sorted by key."""
    order = np.lexsort((depth, key))
    ks = key[order]
    first = np.ones(len(ks), dtype=bool)
    first[1:] = ks[1:] != ks[:-1]
    return order[first]


def occlusion_mask(p: Projected, sizes: np.ndarray, cell: int = OCC_CELL, window: int = OCC_WINDOW,
                   ratio: float = OCC_RATIO) -> np.ndarray:
    """True for projections NOT hidden by a nearer surface (LiDAR–camera parallax).

    The LiDAR sits above and between the cameras, so it sees surfaces the camera cannot (e.g.
    the ground behind a pole). Such points land among the pole's points in the image but are
    much farther: drop a point whose (window×window cell) neighbourhood holds a point nearer
    than `ratio` × its depth.
    """
    from scipy.ndimage import minimum_filter

    if len(p.depth) == 0:
        return np.ones(0, dtype=bool)
    n_cams = int(sizes.shape[0])
    gw, gh = int(sizes[:, 0].max()) // cell + 1, int(sizes[:, 1].max()) // cell + 1
    gx = p.u.astype(np.int64) // cell
    gy = p.v.astype(np.int64) // cell
    flat = (p.cam.astype(np.int64) * gh + gy) * gw + gx
    nearest = zbuffer_keys(flat, p.depth)                      # nearest point per cell
    grid = np.full(n_cams * gh * gw, np.inf)
    grid[flat[nearest]] = p.depth[nearest]
    near = minimum_filter(grid.reshape(n_cams, gh, gw), size=(1, window, window), mode="constant",
                          cval=np.inf)
    return near.ravel()[flat] >= ratio * p.depth
