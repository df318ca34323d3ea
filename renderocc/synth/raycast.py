"""Vectorised ray casting of a ray grid (camera pixels or LiDAR beams) against analytic primitives.

Instead of testing every ray against every primitive, each primitive is tested only against the
window of the grid its bounding box covers (a screen-space rectangle for a camera, a ring x
azimuth range for the LiDAR), with a z-buffer. Cost is the covered area, not rays x primitives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from renderocc.synth.world import BOX, CYLINDER, SPHERE, Prims

Window = tuple[int, int, int, int]  # rows [r0, r1), cols [c0, c1)


class RayGrid(Protocol):
    """A set of rays from one origin, arranged as an (H, W) grid in the sensor frame."""

    dirs: np.ndarray  # (H, W, 3) float32 unit directions, sensor frame

    def windows(self, corners: np.ndarray, t_max: float) -> list[list[Window]]:
        """Grid windows covered by each primitive's 8 bounding-box corners (M, 8, 3), sensor frame."""
        ...


@dataclass
class Hits:
    """Per-ray nearest hit: distance (inf = none), primitive (-1 ground, -2 nothing), normal."""

    t: np.ndarray
    pid: np.ndarray
    normal: np.ndarray
    points: np.ndarray  # (H, W, 3) float32 hit points in the scene-local frame (origin + t d)
    dirs: np.ndarray  # (H, W, 3) unit directions in the scene-local frame
    origin: np.ndarray
    seen: np.ndarray | None = None  # per object: pixels hit when ignoring occluders


def _box(rel, dx, dy, dz, half, yaw):
    """Slab test; rel = origin - centre (3,) or per ray (N, 3); half (3,) or (N, 3)."""
    c, s = np.cos(yaw), np.sin(yaw)
    rx, ry, rz = rel[..., 0], rel[..., 1], rel[..., 2]
    ol = (c * rx + s * ry, -s * rx + c * ry, rz)
    dl = (dx, dy, dz) if np.ndim(yaw) == 0 and yaw == 0.0 else (c * dx + s * dy, -s * dx + c * dy, dz)
    tn = tf = None
    for a in range(3):
        inv = 1.0 / dl[a]
        ta, tb = (-half[..., a] - ol[a]) * inv, (half[..., a] - ol[a]) * inv
        lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
        tn = lo if tn is None else np.maximum(tn, lo)
        tf = hi if tf is None else np.minimum(tf, hi)
    return np.where((tn <= tf) & (tn > 1e-3), tn, np.inf)


def _cylinder(rel, dx, dy, dz, half):
    """Vertical capped cylinder; half = (r, r, h/2)."""
    r, hz = half[..., 0], half[..., 2]
    ox, oy, oz = rel[..., 0], rel[..., 1], rel[..., 2]
    a = dx * dx + dy * dy
    b = 2 * (ox * dx + oy * dy)
    cc = ox * ox + oy * oy - r * r
    disc = b * b - 4 * a * cc
    ts = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    t = np.where((disc >= 0) & (ts > 1e-3) & (np.abs(oz + ts * dz) <= hz), ts, np.inf)
    if np.any(np.abs(oz) > hz):  # origin above or below: the cap facing it
        tc = (np.sign(oz) * hz - oz) / dz
        xc, yc = ox + tc * dx, oy + tc * dy
        t = np.where((np.abs(oz) > hz) & (tc > 1e-3) & (xc * xc + yc * yc <= r * r) & (tc < t), tc, t)
    return t


def _sphere(rel, dx, dy, dz, half):
    r = half[..., 0]
    ox, oy, oz = rel[..., 0], rel[..., 1], rel[..., 2]
    b = dx * ox + dy * oy + dz * oz
    disc = b * b - (ox * ox + oy * oy + oz * oz - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0))
    return np.where((disc >= 0) & (t > 1e-3), t, np.inf)


def intersect(prims: Prims, i: int, o: np.ndarray, dx, dy, dz) -> np.ndarray:
    """Distance (inf = miss) of rays o + t d (d given per component) to primitive i."""
    k = prims.kind[i]
    rel = o - prims.centre[i]
    if k == BOX:
        return _box(rel, dx, dy, dz, prims.half[i], prims.yaw[i])
    if k == CYLINDER:
        return _cylinder(rel, dx, dy, dz, prims.half[i])
    return _sphere(rel, dx, dy, dz, prims.half[i])


def _intersect_pairs(prims: Prims, o: np.ndarray, pid: np.ndarray, dx, dy, dz) -> np.ndarray:
    """Distances of many (ray, primitive) pairs at once; pid (N,) and dx.. (N,) per pair."""
    t = np.full(len(pid), np.inf, np.float32)
    kind = prims.kind[pid]
    for k, fn in ((BOX, _box), (CYLINDER, _cylinder), (SPHERE, _sphere)):
        sel = np.flatnonzero(kind == k)
        if not len(sel):
            continue
        p = pid[sel]
        rel = (o - prims.centre[p]).astype(np.float32)
        half = prims.half[p].astype(np.float32)
        args = (rel, dx[sel], dy[sel], dz[sel], half)
        t[sel] = fn(*args, prims.yaw[p].astype(np.float32)) if k == BOX else fn(*args)
    return t


def normals(prims: Prims, pid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Outward unit normals (N, 3) at surface points of primitives pid (N,), all >= 0."""
    n = np.zeros((len(pid), 3), np.float32)
    kind = prims.kind[pid]
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in (BOX, CYLINDER, SPHERE):
            sel = np.flatnonzero(kind == k)
            if not len(sel):
                continue
            p = pid[sel]
            rel = points[sel] - prims.centre[p].astype(np.float32)
            h = prims.half[p].astype(np.float32)
            if k == SPHERE:
                n[sel] = rel / h[:, :1]
            elif k == CYLINDER:
                radial = np.hypot(rel[:, 0], rel[:, 1])
                side = radial / h[:, 0] >= np.abs(rel[:, 2]) / h[:, 2]
                r = np.maximum(radial, 1e-6)
                n[sel, 0] = np.where(side, rel[:, 0] / r, 0.0)
                n[sel, 1] = np.where(side, rel[:, 1] / r, 0.0)
                n[sel, 2] = np.where(side, 0.0, np.sign(rel[:, 2]))
            else:
                yaw = prims.yaw[p].astype(np.float32)
                cs, sn = np.cos(yaw), np.sin(yaw)
                lx, ly = cs * rel[:, 0] + sn * rel[:, 1], -sn * rel[:, 0] + cs * rel[:, 1]
                qx, qy, qz = np.abs(lx) / h[:, 0], np.abs(ly) / h[:, 1], np.abs(rel[:, 2]) / h[:, 2]
                ax = (qx >= qy) & (qx >= qz)
                ay = ~ax & (qy >= qz)
                nlx = np.where(ax, np.sign(lx), 0.0)
                nly = np.where(ay, np.sign(ly), 0.0)
                n[sel, 0] = cs * nlx - sn * nly
                n[sel, 1] = sn * nlx + cs * nly
                n[sel, 2] = np.where(~ax & ~ay, np.sign(rel[:, 2]), 0.0)
    return n


def box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(M, 8, 3) corners of axis-aligned boxes."""
    sel = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], bool)
    return np.where(sel[None], hi[:, None], lo[:, None])


BATCH_AREA = 3000  # windows up to this many rays are intersected together in one batch


def _cast_small(wins: np.ndarray, prims: Prims, o, dx, dy, dz, t, pid, t_max, seen) -> None:
    """Z-buffer many small windows at once: one vectorised pass over all (ray, primitive) pairs."""
    w = t.shape[1]
    prim, r0, r1, c0, c1 = wins.T
    cols = c1 - c0
    sizes = (r1 - r0) * cols
    owner = np.repeat(np.arange(len(wins)), sizes)
    local = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    pix = (r0[owner] + local // cols[owner]) * w + c0[owner] + local % cols[owner]
    p = prim[owner]
    tp = _intersect_pairs(prims, o, p, dx.ravel()[pix], dy.ravel()[pix], dz.ravel()[pix])
    hit = tp < t_max
    pix, p, tp = pix[hit], p[hit], tp[hit]
    if seen is not None:
        obj = prims.obj[p]
        mine = obj >= 0
        pairs = np.unique(obj[mine].astype(np.int64) * t.size + pix[mine])
        np.add.at(seen, pairs // t.size, 1)
    order = np.argsort(-tp, kind="stable")  # farthest first: the nearest write wins
    pix, p, tp = pix[order], p[order], tp[order]
    best = np.full(t.size, np.inf, np.float32)
    best_p = np.full(t.size, -1, np.int32)
    best[pix] = tp
    best_p[pix] = p
    better = best < t.ravel()
    t.ravel()[better] = best[better]
    pid.ravel()[better] = best_p[better]


def cast(grid: RayGrid, sensor_to_local: np.ndarray, prims: Prims, t_max: float,
         count_seen: bool = False) -> Hits:
    """Nearest hit of every ray of `grid` (posed by `sensor_to_local`) against ground + `prims`."""
    rot, o = sensor_to_local[:3, :3], sensor_to_local[:3, 3].astype(np.float64)
    h, w, _ = grid.dirs.shape
    dirs = (grid.dirs.reshape(-1, 3) @ rot.T.astype(np.float32)).reshape(h, w, 3)
    dx, dy, dz = (np.ascontiguousarray(dirs[..., a]) for a in range(3))
    t = np.full((h, w), t_max, np.float32)
    pid = np.full((h, w), -2, np.int32)
    if o[2] > 0:  # the ground plane z = 0
        with np.errstate(divide="ignore"):
            tg = np.where(dz < -1e-6, -o[2] / dz, np.inf)
        g = tg < t_max
        t[g], pid[g] = tg[g], -1
    lo, hi = prims.bounds()
    corners = (box_corners(lo, hi) - o) @ rot  # sensor frame
    n_obj = int(prims.obj.max()) + 1 if len(prims) else 0
    seen = np.zeros(n_obj, np.int64) if count_seen else None
    last = np.full((h, w), -1, np.int32) if count_seen else None
    small: list[tuple[int, int, int, int, int]] = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i, wins in enumerate(grid.windows(corners, t_max)):
            for r0, r1, c0, c1 in wins:
                if (r1 - r0) * (c1 - c0) <= BATCH_AREA:
                    small.append((i, r0, r1, c0, c1))
                    continue
                ti = intersect(prims, i, o, dx[r0:r1, c0:c1], dy[r0:r1, c0:c1], dz[r0:r1, c0:c1])
                zb = t[r0:r1, c0:c1]
                k = prims.obj[i]
                if seen is not None and k >= 0:
                    hit = ti < t_max
                    lw = last[r0:r1, c0:c1]
                    seen[k] += int(np.count_nonzero(hit & (lw != k)))
                    np.copyto(lw, k, where=hit)
                better = ti < zb
                if better.any():
                    np.copyto(zb, ti, where=better)
                    np.copyto(pid[r0:r1, c0:c1], i, where=better)
        if small:
            _cast_small(np.array(small), prims, o, dx, dy, dz, t, pid, t_max, seen)
    t[pid == -2] = np.inf
    with np.errstate(invalid="ignore"):
        points = o.astype(np.float32) + t[..., None] * dirs
    normal = np.zeros((h * w, 3), np.float32)
    normal[:, 2] = 1.0
    obj = np.flatnonzero(pid >= 0)
    if len(obj):
        normal[obj] = normals(prims, pid.ravel()[obj], points.reshape(-1, 3)[obj])
    return Hits(t, pid, normal.reshape(h, w, 3), points, dirs, o, seen)
