"""Occ3D-format ground truth computed from the world itself (not from LiDAR points).

Semantics: each 0.4 m voxel takes the class covering most of its 4x4x4 sub-samples (samples
reach the voxel faces, so any surface crossing a voxel marks it); ties go to objects, then
static structure, then flat ground. The ground is a 0.2 m slab just below z = 0, so only the
surface layer is occupied, as in Occ3D. Masks: voxels traversed by LiDAR rays up to and
including their return (mask_lidar) and by camera pixel rays up to and including the first
surface they see (mask_camera), as Occ3D's ray casting does.
"""

from __future__ import annotations

import functools

import numpy as np

from renderocc.classes import FREE, LIDARSEG_STANDARD_ORDER, LIDARSEG_TO_OCC3D, NUM_SEMANTIC
from renderocc.synth.world import BOX, CYLINDER, Prims, World

PC_RANGE = np.array([-40.0, -40.0, -1.0, 40.0, 40.0, 5.4])
VOXEL = 0.4
SHAPE = (200, 200, 16)
SUB = np.linspace(-0.199, 0.199, 4) * (VOXEL / 0.4)
GROUND_LAYER = 2  # the voxel layer [-0.2, 0.2] that holds the ground surface
TO_OCC = np.array([LIDARSEG_TO_OCC3D[n] for n in LIDARSEG_STANDARD_ORDER], np.uint8)
PRIORITY = np.array([3] * 11 + [1] * 4 + [2] * 2, np.int32)  # things > static > flat


def _axis_samples(axis: int, lo: float, hi: float) -> tuple[int, int, np.ndarray] | None:
    """Voxel index range [i0, i1) overlapping [lo, hi] on `axis`, and its sub-sample coordinates."""
    n = SHAPE[axis]
    i0 = max(int(np.floor((lo - PC_RANGE[axis]) / VOXEL)), 0)
    i1 = min(int(np.floor((hi - PC_RANGE[axis]) / VOXEL)) + 1, n)
    if i1 <= i0:
        return None
    centres = PC_RANGE[axis] + (np.arange(i0, i1) + 0.5) * VOXEL
    return i0, i1, (centres[:, None] + SUB[None]).ravel()


def voxelise(prims: Prims, ground_occ: np.ndarray) -> np.ndarray:
    """Semantics (200, 200, 16) uint8 from primitives in the ego frame and ground classes.

    `ground_occ` is the Occ3D class of the ground at each xy sub-sample, (800, 800).
    """
    counts = np.zeros((NUM_SEMANTIC,) + SHAPE, np.int16)
    gl = ground_occ.reshape(SHAPE[0], 4, SHAPE[1], 4)
    for c in np.flatnonzero(np.bincount(ground_occ.ravel(), minlength=NUM_SEMANTIC)):
        counts[c, :, :, GROUND_LAYER] += 2 * (gl == c).sum((1, 3), dtype=np.int16)
    lo, hi = prims.bounds()
    occ = TO_OCC[prims.label]
    for i in range(len(prims)):
        ax = [_axis_samples(a, lo[i, a], hi[i, a]) for a in range(3)]
        if any(a is None for a in ax):
            continue
        (x0, x1, xs), (y0, y1, ys), (z0, z1, zs) = ax
        cx, cy, cz = prims.centre[i]
        hx, hy, hz = prims.half[i]
        dx, dy, dz = xs[:, None] - cx, ys[None, :] - cy, zs - cz
        if prims.kind[i] == BOX:
            c, s = np.cos(prims.yaw[i]), np.sin(prims.yaw[i])
            xy = (np.abs(c * dx + s * dy) <= hx) & (np.abs(-s * dx + c * dy) <= hy)
        elif prims.kind[i] == CYLINDER:
            xy = dx * dx + dy * dy <= hx * hx
        else:
            inside = dx[:, :, None] ** 2 + dy[:, :, None] ** 2 + dz[None, None] ** 2 <= hx * hx
            counts[occ[i], x0:x1, y0:y1, z0:z1] += inside.reshape(
                x1 - x0, 4, y1 - y0, 4, z1 - z0, 4).sum((1, 3, 5), dtype=np.int16)
            continue
        nxy = xy.reshape(x1 - x0, 4, y1 - y0, 4).sum((1, 3), dtype=np.int16)
        nz = (np.abs(dz) <= hz).reshape(z1 - z0, 4).sum(1, dtype=np.int16)
        counts[occ[i], x0:x1, y0:y1, z0:z1] += nxy[:, :, None] * nz[None, None]
    sem = np.full(SHAPE, FREE, np.uint8)
    best = np.zeros(SHAPE, np.int32)
    for c in np.argsort(-PRIORITY, kind="stable"):  # equal counts: the higher priority keeps it
        if counts[c].any():
            better = counts[c] > best
            best[better] = counts[c][better]
            sem[better] = c
    return sem


def ground_samples(world: World, ego_to_local: np.ndarray) -> np.ndarray:
    """Occ3D class of the ground at every voxel xy sub-sample (800, 800)."""
    xs = (PC_RANGE[0] + (np.arange(SHAPE[0]) + 0.5)[:, None] * VOXEL + SUB[None]).ravel()
    ys = (PC_RANGE[1] + (np.arange(SHAPE[1]) + 0.5)[:, None] * VOXEL + SUB[None]).ravel()
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    r, t = ego_to_local[:3, :3], ego_to_local[:3, 3]
    lx = r[0, 0] * gx + r[0, 1] * gy + t[0]
    ly = r[1, 0] * gx + r[1, 1] * gy + t[1]
    label, _ = world.ground(lx, ly)
    return TO_OCC[label]


def semantics(world: World, t: float) -> np.ndarray:
    """Occ3D semantics at time t in the ego frame at t."""
    ego = world.ego_pose(t)
    prims = world.prims_at(t).transformed(np.linalg.inv(ego))
    lo, hi = prims.bounds()
    near = (hi[:, 0] > PC_RANGE[0]) & (lo[:, 0] < PC_RANGE[3]) & (hi[:, 1] > PC_RANGE[1]) \
        & (lo[:, 1] < PC_RANGE[4])
    sub = Prims(*(getattr(prims, f)[near] for f in Prims.__dataclass_fields__))
    return voxelise(sub, ground_samples(world, ego))


@functools.lru_cache(maxsize=1)
def voxel_centres() -> np.ndarray:
    """(200 * 200 * 16, 3) float32 voxel centres in [x, y, z] C order."""
    axes = [PC_RANGE[a] + (np.arange(SHAPE[a]) + 0.5) * VOXEL for a in range(3)]
    g = np.meshgrid(*axes, indexing="ij")
    return np.stack([a.ravel() for a in g], 1).astype(np.float32)


def lidar_mask(origin: np.ndarray, points: np.ndarray, step: float = 0.2, chunk: int = 4096) -> np.ndarray:
    """Voxels traversed by the rays from `origin` to each point, plus each point's voxel.

    origin (3,), points (N, 3) in the grid frame. Samples every `step` metres along each ray.
    """
    mask = np.zeros(int(np.prod(SHAPE)), bool)
    lo, hi = PC_RANGE[:3].astype(np.float32), PC_RANGE[3:].astype(np.float32)
    o = origin.astype(np.float32)
    rel = points.astype(np.float32) - o
    rng_ = np.linalg.norm(rel, axis=1)
    d = rel / np.maximum(rng_, 1e-6)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / d, (hi - o) / d
        tin = np.maximum(np.nanmax(np.minimum(t1, t2), 1), 0.0)
        tout = np.nanmin(np.maximum(t1, t2), 1)
    stop = np.minimum(tout, rng_)
    n = np.clip(np.ceil((stop - tin) / step), 0, 1e4).astype(np.int64)
    n[~(stop > tin)] = 0
    inv = np.float32(1.0 / VOXEL)
    for s in range(0, len(d), chunk):
        nn = n[s:s + chunk]
        ray = np.repeat(np.arange(s, s + len(nn)), nn)
        k = np.arange(len(ray), dtype=np.float32) - np.repeat((np.cumsum(nn) - nn).astype(np.float32), nn)
        tt = np.minimum(tin[ray] + (k + 0.5) * step, stop[ray])
        flat = np.zeros(len(ray), np.int64)
        for a, mul in ((0, SHAPE[1] * SHAPE[2]), (1, SHAPE[2]), (2, 1)):
            ia = ((o[a] - lo[a] + tt * d[ray, a]) * inv).astype(np.int64)
            flat += np.clip(ia, 0, SHAPE[a] - 1) * mul
        mask[flat] = True
    idx = np.floor((points - lo) / VOXEL).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < np.array(SHAPE)), 1)
    mask[np.ravel_multi_index(idx[ok].T, SHAPE)] = True
    return mask.reshape(SHAPE)


def camera_mask(centres: np.ndarray, grid_to_cam: np.ndarray, k: np.ndarray, ray_dist: np.ndarray,
                candidates: np.ndarray | None = None) -> np.ndarray:
    """Voxels whose centre a camera sees: in the image and not behind the surface of its pixel.

    This is Occ3D's camera ray casting (a ray from the camera to each voxel, stopped by the first
    occupied surface) evaluated with the camera's depth buffer `ray_dist` (H, W; inf = sky).
    `candidates` optionally restricts the test to a superset of the visible voxel indices.
    """
    h, w = ray_dist.shape
    idx = np.arange(len(centres)) if candidates is None else candidates
    r, t = grid_to_cam[:3, :3].astype(np.float32), grid_to_cam[:3, 3].astype(np.float32)
    pc = centres[idx] @ r.T + t
    z = pc[:, 2]
    i = np.flatnonzero(z > 0.1)
    zi = z[i]
    u = (k[0, 0] * pc[i, 0] / zi + (k[0, 2] + 0.5)).astype(np.int64)
    v = (k[1, 1] * pc[i, 1] / zi + (k[1, 2] + 0.5)).astype(np.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    i, u, v, zi = i[inside], u[inside], v[inside], zi[inside]
    dist = np.sqrt(zi * zi + pc[i, 0] ** 2 + pc[i, 1] ** 2)
    vis = np.zeros(len(centres), bool)
    vis[idx[i]] = dist <= ray_dist[v, u] + VOXEL * 0.87
    return vis.reshape(SHAPE)


@functools.lru_cache(maxsize=12)
def sector(position: tuple[float, float], yaw: float, half_fov: float, margin: float = 0.15) -> np.ndarray:
    """Indices of voxels within a horizontal field of view (+ margin) seen from an ego-frame position.

    A cheap superset for `camera_mask`: the ego moves little between the LiDAR keyframe and a
    camera's trigger, so the margin (radians) and a 4 m disc around the camera cover the rest.
    """
    c = voxel_centres()
    dx, dy = c[:, 0] - position[0], c[:, 1] - position[1]
    rel = np.mod(np.arctan2(dy, dx) - yaw + np.pi, 2 * np.pi) - np.pi
    return np.flatnonzero((np.abs(rel) < half_fov + margin) | (dx * dx + dy * dy < 16.0))
