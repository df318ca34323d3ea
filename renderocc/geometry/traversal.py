"""Exact voxel traversal (Amanatides & Woo): for anything that must be a discrete voxel set.

`VoxelWalk` steps many segments at once through every voxel they touch, in order;
`mark_crossed_numpy` marks those voxels; `first_hits_numpy` walks to the first occupied voxel and
returns the distance where the ray LEAVES it (the RayIoU convention of SparseOcc's kernel,
including its tie order: on equal crossings z steps before y before x). These are the numpy twins
of the compiled walks (`cuda/csrc/voxel_walk.cpp`, `walk_cpu.cpp`), which repeat their float64
arithmetic operation for operation; `renderocc.ops` picks one or the other.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from renderocc.geometry.grid import Grid
from renderocc.geometry.sampling import clip_to_box

MAX_LAYERS = 7  # bits 0-6 of the packed grid hold layers; bit 7 marks its border
NUMPY_WALK_THREADS = 2  # numpy releases the GIL inside each step: two threads keep two cores busy
RAYS_PER_THREAD = 4096  # fewer rays than this per thread cost more in the pool than they gain
COMPACT_BELOW = 0.75  # drop finished rays once fewer than this share are alive


class VoxelWalk:
    """Exact voxel traversal (Amanatides & Woo) of many segments at once, one boundary per step.

    Each `advance` moves every live ray into its next voxel, so a loop costs at most X + Y + Z
    numpy steps whatever the number of rays, and work follows voxels crossed rather than samples
    taken. Rays stop at their `lengths`, at the grid's edge, or when `advance(keep)` drops them.
    """

    def __init__(self, origins: np.ndarray, directions: np.ndarray, lengths: np.ndarray, grid: Grid) -> None:
        lo, hi = grid.lo, grid.hi
        vs = np.asarray(grid.voxel, np.float64)
        self.shape = np.array(grid.shape, np.int64)
        self.strides = np.array([self.shape[1] * self.shape[2], self.shape[2], 1])
        o = np.asarray(origins, np.float64)
        d = np.asarray(directions, np.float64)
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



def check_hit_grid(hit: np.ndarray, grid: Grid) -> None:
    """`hit` must be a C-contiguous array of the grid's shape (it is written through a flat view)."""
    if tuple(hit.shape) != grid.shape:
        raise ValueError(f"hit grid {tuple(hit.shape)} does not match the grid's shape {grid.shape}")
    if not hit.flags.c_contiguous:
        raise ValueError("hit grid must be C-contiguous (it is written through a flat view)")


def mark_crossed_numpy(hit: np.ndarray, origins: np.ndarray, directions: np.ndarray, lengths: np.ndarray,
                       grid: Grid) -> None:
    """`mark_crossed` with the numpy `VoxelWalk` (the reference the compiled walk is tested against)."""
    flat = hit.reshape(-1)
    walk = VoxelWalk(origins, directions, lengths, grid)
    while walk:
        flat[walk.index()] = True
        walk.advance()


BORDER = np.uint8(128)  # bit 7 of the packed grid: the one-voxel frame around it


def first_hits_numpy(bits: np.ndarray, origins: np.ndarray, directions: np.ndarray, grid: Grid, layers: int,
                     threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`first_hits` in numpy on `packed_layers` bits: (voxel (L, R), dist (L, R), hit (L, R)).

    Rays split over up to `threads` threads (default 2: numpy releases the GIL inside each step)."""
    o, d = origins, directions
    start = _walk_start(bits, o, d, grid)
    L = layers
    voxel = np.full((L, len(o)), -1, np.int64)
    dist = np.full((L, len(o)), np.nan)
    hit = np.zeros((L, len(o)), bool)
    voxel[:, start.ray], dist[:, start.ray], hit[:, start.ray] = _walk_numpy(start, L, threads)
    # padded flat index → the grid's own flat index
    got = voxel >= 0
    v = voxel[got]
    shape, padded, strides = start.shape, start.shape + 2, start.strides
    i, j, k = v // strides[0] - 1, (v // strides[1]) % padded[1] - 1, v % padded[2] - 1
    voxel[got] = (i * shape[1] + j) * shape[2] + k
    return voxel, dist, hit


def packed_layers(layers: np.ndarray) -> np.ndarray:
    """(X + 2, Y + 2, Z + 2) uint8: bit k = layer k, in a frame of BORDER voxels, so one gather
    per step reads every layer and sees the ray leave the grid (no per-axis bounds checks)."""
    shape = np.array(layers.shape[1:], np.int64)
    bits = np.full(tuple(shape + 2), BORDER, np.uint8)
    inner = bits[1:-1, 1:-1, 1:-1]
    inner[...] = 0
    for k in range(layers.shape[0]):
        inner |= layers[k].astype(np.uint8) << k
    return bits


@dataclass
class WalkStart:
    """Every ray that meets the box, ready for the numpy walk.

    `bits` the packed layers (flat), `flat` the padded flat index of each ray's first voxel,
    `t_next`/`t_delta`/`move` (n, 3) its next crossing, the distance between crossings and
    the flat-index step per axis; `ray` which input ray each one is.
    """

    bits: np.ndarray
    ray: np.ndarray
    flat: np.ndarray
    t_next: np.ndarray
    t_delta: np.ndarray
    move: np.ndarray
    shape: np.ndarray
    strides: np.ndarray


def _walk_start(bits: np.ndarray, o: np.ndarray, d: np.ndarray, grid: Grid) -> WalkStart:
    shape = np.array(bits.shape, np.int64) - 2
    lo = grid.lo
    vs = np.asarray(grid.voxel, np.float64)
    t_in, t_out = clip_to_box(o, d, lo, lo + shape * vs)
    ray = np.flatnonzero(t_out > t_in)
    o, d, t0 = o[ray], d[ray], t_in[ray]
    idx = np.clip(np.floor((o + t0[:, None] * d - lo) / vs).astype(np.int64), 0, shape - 1)
    step = np.where(d >= 0, 1, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_next = np.where(d != 0, (lo + (idx + (step > 0)) * vs - o) / d, np.inf)
        t_delta = np.where(d != 0, vs / np.abs(d), np.inf)
    padded = shape + 2
    strides = np.array([padded[1] * padded[2], padded[2], 1], np.int64)
    return WalkStart(bits=bits.reshape(-1), ray=ray, flat=(idx + 1) @ strides, t_next=t_next, t_delta=t_delta,
                     move=step * strides, shape=shape, strides=strides)


def _walk_numpy(start: WalkStart, L: int, threads: int | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The walk loop in numpy, the rays split over up to `threads` (default 2) threads (numpy
    releases the GIL inside each step). Returns (L, n) padded voxel, dist, hit."""
    n = len(start.ray)
    parts = max(1, min(threads or min(NUMPY_WALK_THREADS, os.cpu_count() or 1), n // RAYS_PER_THREAD or 1))
    if parts == 1:
        return _walk_numpy_part(start, L, np.arange(n))
    with ThreadPoolExecutor(parts) as pool:
        res = list(pool.map(lambda p: _walk_numpy_part(start, L, p), np.array_split(np.arange(n), parts)))
    return tuple(np.concatenate([r[i] for r in res], axis=1) for i in range(3))


def _walk_numpy_part(start: WalkStart, L: int, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bits, n = start.bits, len(sel)
    voxel = np.full((L, n), -1, np.int64)
    dist = np.full((L, n), np.nan)
    hit = np.zeros((L, n), bool)
    all_bits, dead = (1 << L) - 1, np.uint8(255)
    ray = np.arange(n)
    # Structure of arrays, one 1-D array per axis: every step is a few cheap elementwise passes.
    # Finished rays are marked dead and dropped only in batches, so most steps compact nothing;
    # their voxel index runs on past the border and is read with mode="clip" and ignored.
    tx, ty, tz = (np.ascontiguousarray(start.t_next[sel, a]) for a in range(3))
    dx, dy, dz = (np.ascontiguousarray(start.t_delta[sel, a]) for a in range(3))
    sx, sy, sz = (np.ascontiguousarray(start.move[sel, a], np.int32) for a in range(3))
    flat = start.flat[sel].astype(np.int32)
    cur = bits.take(flat)
    found = np.zeros(n, np.uint8)
    live = n
    while live:
        # the kernel's branch order: x only when strictly first; z wins ties with y, y with x
        mx = (tx < ty) & (tx < tz)
        my = ~mx & (ty < tz)
        mz = ~(mx | my)
        occ = cur & ~found
        if occ.any():  # entered an occupied voxel: it ends here, where the ray leaves it
            rec = np.flatnonzero(occ)
            t_rec = np.where(mx[rec], tx[rec], np.where(my[rec], ty[rec], tz[rec]))
            for k in range(L):
                new = ((occ[rec] >> k) & 1).astype(bool)
                voxel[k, ray[rec[new]]] = flat[rec[new]]
                dist[k, ray[rec[new]]] = t_rec[new]
                hit[k, ray[rec[new]]] = True
            f = found[rec] | occ[rec]
            found[rec] = np.where(f == all_bits, dead, f)
        move = np.where(mx, sx, np.where(my, sy, sz))
        flat += move
        cur = bits.take(flat, mode="clip")
        gone = cur == BORDER
        if gone.any():  # left the grid: layers without a hit end in the last voxel, at the box exit
            rec = np.flatnonzero(gone & (found != dead))
            t_rec = np.where(mx[rec], tx[rec], np.where(my[rec], ty[rec], tz[rec]))
            for k in range(L):
                miss = ((found[rec] >> k) & 1) == 0
                voxel[k, ray[rec[miss]]] = flat[rec[miss]] - move[rec[miss]]
                dist[k, ray[rec[miss]]] = t_rec[miss]
            found[rec] = dead
        np.add(tx, dx, out=tx, where=mx)  # (t_delta is inf on axes the ray never crosses)
        np.add(ty, dy, out=ty, where=my)
        np.add(tz, dz, out=tz, where=mz)
        alive = found != dead
        live = int(np.count_nonzero(alive))
        if live < COMPACT_BELOW * len(ray):
            ray, flat, found, cur = ray[alive], flat[alive], found[alive], cur[alive]
            tx, ty, tz, dx, dy, dz = tx[alive], ty[alive], tz[alive], dx[alive], dy[alive], dz[alive]
            sx, sy, sz = sx[alive], sy[alive], sz[alive]
    return voxel, dist, hit
