"""Pixel rays in the key-ego frame and voxel traversal, shared by eval, predict, viz and qa.

Labels store camera z-depth at original-image pixels (u, v). The ray through (u, v) has camera
direction K⁻¹[u, v, 1] (z-component 1), so a point at z-depth z lies at distance
z·‖K⁻¹[u, v, 1]‖ along the unit ray: `scale` converts between the two. Rendering returns the
distance, labels hold z; comparing them without `scale` is the reference code's depth bug.
"""

from __future__ import annotations

import numpy as np


def pixel_rays(u: np.ndarray, v: np.ndarray, K: np.ndarray, cam2ego: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origins (N,3), unit directions (N,3), scale (N,) = distance per metre of z) in the ego frame."""
    uv1 = np.stack([np.asarray(u, np.float64), np.asarray(v, np.float64),
                    np.ones(len(u))], axis=-1)
    cam = uv1 @ np.linalg.inv(np.asarray(K, np.float64)).T
    scale = np.linalg.norm(cam, axis=-1)
    cam2ego = np.asarray(cam2ego, np.float64)
    dirs = (cam / scale[:, None]) @ cam2ego[:3, :3].T
    origins = np.broadcast_to(cam2ego[:3, 3], dirs.shape).copy()
    return origins, dirs, scale


def clip_to_box(origins: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                t_max: np.ndarray | float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Slab test: per ray (t_near, t_far) of its part inside the box, limited to [0, t_max].

    Rays that miss get t_near > t_far.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(dirs) > 1e-12, dirs, 1e-12)
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    t_near = np.maximum(np.minimum(t0, t1).max(-1), 0.0)
    t_far = np.minimum(np.maximum(t0, t1).min(-1), t_max)
    return t_near, t_far


class VoxelWalk:
    """Exact voxel traversal (Amanatides & Woo) of many segments at once, one boundary per step.

    Each `advance` moves every live ray into its next voxel, so a loop costs at most X + Y + Z
    numpy steps whatever the number of rays, and work follows voxels crossed rather than samples
    taken. Rays stop at their `lengths`, at the grid's edge, or when `advance(keep)` drops them.
    """

    def __init__(self, origins, dirs, lengths, pc_range, voxel_size, shape):
        lo = np.asarray(pc_range[:3], np.float64)
        hi = np.asarray(pc_range[3:], np.float64)
        vs = np.asarray(voxel_size, np.float64)
        self.shape = np.array(shape, np.int64)
        self.strides = np.array([self.shape[1] * self.shape[2], self.shape[2], 1])
        o = np.asarray(origins, np.float64)
        d = np.asarray(dirs, np.float64)
        tn, tf = clip_to_box(o, d, lo, hi, np.asarray(lengths, np.float64))
        ok = tf >= tn
        self.ray = np.flatnonzero(ok)
        o, d, self.t_cur, self.t_end = o[ok], d[ok], tn[ok], tf[ok]
        self.idx = np.clip(np.floor((o + self.t_cur[:, None] * d - lo) / vs).astype(np.int64), 0,
                           self.shape - 1)
        self.step = np.sign(d).astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            boundary = lo + (self.idx + (self.step > 0)) * vs
            self.t_max = np.where(self.step != 0, (boundary - o) / d, np.inf)
            self.t_delta = np.where(self.step != 0, vs / np.abs(d), np.inf)

    def __bool__(self) -> bool:
        return bool(len(self.ray))

    def index(self) -> np.ndarray:
        """Flat voxel index of every live ray's current voxel."""
        return self.idx @ self.strides

    def current(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ray ids, flat voxel index, t entering, t leaving) of every live ray's current voxel."""
        t_out = np.minimum(self.t_max.min(1), self.t_end)
        return self.ray, self.idx @ self.strides, self.t_cur, np.maximum(t_out, self.t_cur)

    def advance(self, keep: np.ndarray | None = None) -> None:
        """Step every live ray into its next voxel; drop finished rays and those with keep False."""
        axis = np.argmin(self.t_max, axis=1)
        r = np.arange(len(self.ray))
        t_next = self.t_max[r, axis]
        self.idx[r, axis] += self.step[r, axis]
        self.t_max[r, axis] += self.t_delta[r, axis]
        self.t_cur = t_next
        a = self.idx[r, axis]
        alive = (t_next <= self.t_end) & (a >= 0) & (a < self.shape[axis])
        if keep is not None:
            alive &= keep
        if not alive.all():
            for name in ("ray", "idx", "t_max", "t_delta", "step", "t_end", "t_cur"):
                setattr(self, name, getattr(self, name)[alive])


def mark_crossed(hit: np.ndarray, origins: np.ndarray, dirs: np.ndarray, lengths: np.ndarray,
                 pc_range, voxel_size) -> None:
    """Set `hit[x, y, z] = True` for every voxel a segment o + t·d, t ∈ [0, length], passes
    (exactly: a voxel only grazed at a corner counts too)."""
    if not hit.flags.c_contiguous:
        raise ValueError("hit grid must be C-contiguous (it is written through a flat view)")
    flat = hit.reshape(-1)
    walk = VoxelWalk(origins, dirs, lengths, pc_range, voxel_size, hit.shape)
    while walk:
        flat[walk.index()] = True
        walk.advance()
