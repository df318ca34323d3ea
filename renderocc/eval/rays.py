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


def mark_crossed(hit: np.ndarray, origins: np.ndarray, dirs: np.ndarray, lengths: np.ndarray,
                 pc_range, voxel_size) -> None:
    """Set `hit[x, y, z] = True` for every voxel a segment o + t·d, t ∈ [0, length], passes.

    Exact voxel traversal (Amanatides & Woo), vectorised over rays: one numpy step per voxel
    boundary crossed (at most X + Y + Z iterations), so cost follows voxels crossed rather
    than samples taken, and a voxel only grazed at a corner is still counted.
    """
    if not hit.flags.c_contiguous:
        raise ValueError("hit grid must be C-contiguous (it is written through a flat view)")
    lo = np.asarray(pc_range[:3], np.float64)
    hi = np.asarray(pc_range[3:], np.float64)
    vs = np.asarray(voxel_size, np.float64)
    shape = np.array(hit.shape, np.int64)
    flat = hit.reshape(-1)
    o = np.asarray(origins, np.float64)
    d = np.asarray(dirs, np.float64)
    tn, tf = clip_to_box(o, d, lo, hi, np.asarray(lengths, np.float64))
    ok = tf >= tn
    o, d, tn, tf = o[ok], d[ok], tn[ok], tf[ok]
    if not len(o):
        return
    idx = np.clip(np.floor((o + tn[:, None] * d - lo) / vs).astype(np.int64), 0, shape - 1)
    step = np.sign(d).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        boundary = lo + (idx + (step > 0)) * vs
        t_max = np.where(step != 0, (boundary - o) / d, np.inf)
        t_delta = np.where(step != 0, vs / np.abs(d), np.inf)
    rows = np.arange(len(o))
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    while len(idx):
        flat[idx @ strides] = True
        axis = np.argmin(t_max, axis=1)
        r = rows[:len(idx)]
        t_next = t_max[r, axis]
        idx[r, axis] += step[r, axis]
        t_max[r, axis] += t_delta[r, axis]
        alive = (t_next <= tf) & (idx[r, axis] >= 0) & (idx[r, axis] < shape[axis])
        if not alive.all():
            idx, t_max, t_delta, step, tf = idx[alive], t_max[alive], t_delta[alive], step[alive], tf[alive]
