"""The one place that says how a ray meets the voxel grid; every other module imports it from here.

Conventions (the renderer kernels in `cuda/csrc/render_core.h` implement the same arithmetic and
`cuda/reference.py` checks them against the functions below):

1. Grid: a plain dict `{"pc_range": [xmin, ymin, zmin, xmax, ymax, zmax], "voxel_size": [vx, vy, vz],
   "shape": [X, Y, Z]}` in the LiDAR-keyframe ego frame, indexed `[x, y, z]`.
2. Pixel rays (`pixel_rays`, `label_rays`): origin = camera centre, direction = R·K⁻¹[u, v, 1]
   normalised; a label's camera z becomes the distance `z·‖K⁻¹[u, v, 1]‖` along the unit ray.
3. Box clip: slab test against `pc_range` and t ≥ near; an axis with a zero direction component
   never divides (`clip_rays`, torch, exactly the kernel's `clip_ray`; `clip_to_box`, numpy, for
   traversal).
4. Sample rule: K = floor((t_out − t_in)/step·(1 + 1e-6)) samples at t_k = t_in + (k + ½)·step
   (`sample_count`, `sample_positions`).
5. Voxel cells: voxel i covers [lo + i·vs, lo + (i+1)·vs) and its centre is lo + (i + ½)·vs
   (`voxel_index`, `voxel_centres`).
6. Trilinear density at the voxel-centre convention: continuous index u = (p − lo)/vs − ½ clamped to
   [0, N − 1], so values live at voxel centres and hold flat beyond the outermost ones (`trilinear`
   samples values, `trilinear_corners` gives the 8 voxels and weights, as the kernel).
7. Exact traversal (Amanatides & Woo) for anything that must be a discrete voxel set: every voxel
   a segment touches, in order (`VoxelWalk`, `mark_crossed`). `first_hits` walks to the first
   occupied voxel and returns the distance where the ray LEAVES it (the RayIoU convention of
   SparseOcc's kernel, including its tie order: on equal crossings z steps before y before x);
   `cuda/csrc/walk_cpu.cpp` runs the same walk, operation for operation, as an extension op.

Continuous consumers (rendering, visibility, threshold choice) use 3, 4 and 6; discrete ones
(sparse 3D targets, QA coverage, RayIoU) use 5 and 7.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

COUNT_SLACK = 1e-6  # a span of exactly n steps gives n samples despite rounding (as the kernels)


# -- 2. pixel rays ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _inverse_intrinsics(k_bytes: bytes) -> np.ndarray:
    """inv(K) of a 3x3 float64 K given as bytes: a dataset has a few K, called per camera per
    sample (QA, training), and LAPACK's per-call overhead dominated those loops."""
    inv = np.linalg.inv(np.frombuffer(k_bytes, np.float64).reshape(3, 3))
    inv.flags.writeable = False
    return inv


def pixel_rays(u: np.ndarray, v: np.ndarray, K: np.ndarray, cam2ego: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origins (N,3), unit directions (N,3), scale (N,) = distance per metre of z) in the ego frame.

    Labels store camera z; rendering returns distance along the unit ray. `scale` converts
    between the two (comparing them without it is the reference code's depth bug).
    """
    uv1 = np.stack([np.asarray(u, np.float64), np.asarray(v, np.float64),
                    np.ones(len(u))], axis=-1)
    cam = uv1 @ _inverse_intrinsics(np.asarray(K, np.float64).tobytes()).T
    scale = np.linalg.norm(cam, axis=-1)
    cam2ego = np.asarray(cam2ego, np.float64)
    dirs = (cam / scale[:, None]) @ cam2ego[:3, :3].T
    origins = np.broadcast_to(cam2ego[:3, 3], dirs.shape).copy()
    return origins, dirs, scale


def label_rays(labels: dict, K_by_cam: dict[int, np.ndarray], cam2ego_by_cam: dict[int, np.ndarray]
               ) -> dict[str, np.ndarray]:
    """A label table (`camera`, `u`, `v`, `depth`) → {origins, dirs, dist, scale} (float64).

    Per camera index, `pixel_rays` with that camera's original-size K and camera→frame pose, so
    the same rays serve key frames and neighbours (whose cam2ego maps into the key ego frame).
    """
    cam = np.asarray(labels["camera"]).astype(np.int64)
    n = len(cam)
    origins, dirs, scale = np.zeros((n, 3)), np.zeros((n, 3)), np.ones(n)
    u, v = np.asarray(labels["u"]), np.asarray(labels["v"])
    for c in np.unique(cam):
        m = cam == c
        origins[m], dirs[m], scale[m] = pixel_rays(u[m], v[m], K_by_cam[int(c)], cam2ego_by_cam[int(c)])
    dist = np.asarray(labels["depth"]).astype(np.float64) * scale
    return {"origins": origins, "dirs": dirs, "dist": dist, "scale": scale}


# -- 3. box clip ------------------------------------------------------------------------------------
def clip_to_box(origins: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                t_max: np.ndarray | float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Slab test: per ray (t_near, t_far) of its part inside the box, limited to [0, t_max].

    Rays that miss get t_near > t_far. numpy/float64, for the exact traversal.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(dirs) > 1e-12, dirs, 1e-12)
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    t_near = np.maximum(np.minimum(t0, t1).max(-1), 0.0)
    t_far = np.minimum(np.maximum(t0, t1).min(-1), t_max)
    return t_near, t_far


def clip_rays(origins: torch.Tensor, directions: torch.Tensor, box: Sequence[float], near: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's `clip_ray`: slab test against `box` (pc_range) and t ≥ near → (t_in, t_out, hit).

    Zero-direction axes never divide: the ray lies within that slab for all t or misses.
    """
    R = origins.shape[0]
    opts = {"dtype": origins.dtype, "device": origins.device}
    t_in = torch.full((R,), near, **opts)
    t_out = torch.full((R,), float("inf"), **opts)
    hit = torch.ones(R, dtype=torch.bool, device=origins.device)
    for a in range(3):
        o, d = origins[:, a], directions[:, a]
        lo, hi = box[a], box[a + 3]
        zero = d == 0
        hit &= ~(zero & ((o < lo) | (o > hi)))
        safe_d = torch.where(zero, torch.ones_like(d), d)
        t1 = (lo - o) / safe_d
        t2 = (hi - o) / safe_d
        tlo = torch.where(zero, torch.full_like(t1, -float("inf")), torch.minimum(t1, t2))
        thi = torch.where(zero, torch.full_like(t1, float("inf")), torch.maximum(t1, t2))
        t_in = torch.where(tlo > t_in, tlo, t_in)
        t_out = torch.where(thi < t_out, thi, t_out)
    hit &= t_out > t_in
    return t_in, t_out, hit


# -- 4. sample rule ---------------------------------------------------------------------------------
def sample_count(t_in: torch.Tensor, t_out: torch.Tensor, hit: torch.Tensor, step: float) -> torch.Tensor:
    """(R,) int64 samples per ray: floor((t_out − t_in)/step·(1 + 1e-6)), 0 for rays that miss."""
    count = torch.floor((t_out - t_in) / step * (1 + COUNT_SLACK))
    return torch.where(hit, count, torch.zeros_like(count)).long()


def sample_positions(origins: torch.Tensor, directions: torch.Tensor, box: Sequence[float], near: float,
                     step: float) -> tuple[torch.Tensor, ...]:
    """Every sample of every ray, padded to the longest: (t (R,K), valid (R,K), points (R,K,3), hit, t_out).

    t_k = t_in + (k + ½)·step for k < sample_count; padded entries continue the sequence but
    have valid False.
    """
    R = origins.shape[0]
    t_in, t_out, hit = clip_rays(origins, directions, box, near)
    K = sample_count(t_in, t_out, hit, step)
    k_max = max(int(K.max()) if R else 0, 1)
    k = torch.arange(k_max, device=origins.device)
    t = t_in[:, None] + (k.to(origins.dtype) + 0.5) * step  # (R, K)
    valid = k[None, :] < K[:, None]
    points = origins[:, None, :] + t[..., None] * directions[:, None, :]  # (R, K, 3)
    return t, valid, points, hit, t_out


# -- 5. voxel cells ---------------------------------------------------------------------------------
def voxel_index(points: np.ndarray, grid: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ijk (..., 3) int64 = floor((p − lo)/vs), inside (...,) bool: the cell lies in the grid)."""
    lo = np.asarray(grid["pc_range"][:3], np.float64)
    vs = np.asarray(grid["voxel_size"], np.float64)
    idx = np.floor((np.asarray(points, np.float64) - lo) / vs).astype(np.int64)
    inside = ((idx >= 0) & (idx < np.asarray(grid["shape"], np.int64))).all(-1)
    return idx, inside


def flat_index(ijk: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """C-order flat index of [x, y, z] voxel indices (callers mask out-of-grid ones)."""
    return (ijk[..., 0] * int(shape[1]) + ijk[..., 1]) * int(shape[2]) + ijk[..., 2]


def voxel_centres(grid: dict) -> np.ndarray:
    """(X, Y, Z, 3) float64 centres lo + (i + ½)·vs: where voxel values live for trilinear sampling."""
    lo = np.asarray(grid["pc_range"][:3], np.float64)
    vs = np.asarray(grid["voxel_size"], np.float64)
    axes = [lo[a] + (np.arange(int(grid["shape"][a])) + 0.5) * vs[a] for a in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


# -- 6. trilinear sampling --------------------------------------------------------------------------
def normalised_coords(points: torch.Tensor, box: Sequence[float], voxel: Sequence[float],
                      shape: Sequence[int]) -> torch.Tensor:
    """grid_sample coordinates (z, y, x order, align_corners=True) of the voxel-centre index
    u = (p − lo)/vs − ½, clamped to the outermost centres [0, N − 1] (the kernel's `axis_lerp`)."""
    coords = []
    for a in range(3):
        n = int(shape[a])
        u = ((points[..., a] - box[a]) / voxel[a] - 0.5).clamp(0, n - 1)
        coords.append(u / (n - 1) * 2 - 1 if n > 1 else torch.zeros_like(u))
    return torch.stack(coords[::-1], dim=-1)


def trilinear(volume: torch.Tensor, points: torch.Tensor, grid: dict) -> torch.Tensor:
    """Sample (C, X, Y, Z) `volume` at `points` (..., 3) → (..., C), trilinear at voxel centres.

    The same values the kernels interpolate (borders held flat), via `grid_sample`.
    """
    C, shape = volume.shape[0], volume.shape[1:]
    coords = normalised_coords(points, grid["pc_range"], grid["voxel_size"], shape)
    out = F.grid_sample(volume[None], coords.reshape(1, 1, 1, -1, 3).to(volume.dtype), mode="bilinear",
                        padding_mode="border", align_corners=True)  # (1, C, 1, 1, N)
    return out[0, :, 0, 0].T.reshape(*points.shape[:-1], C)


def trilinear_corners(points: torch.Tensor, grid: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat voxel index (..., 8), weight (..., 8)) of each point's trilinear corners, as the
    kernel's `trilinear_corners`: clamped continuous index, lower corner clamped to N − 2.

    A point inside voxel i's cell puts weight ≥ ½ per axis, so ≥ ⅛ in all, on voxel i.
    """
    box, voxel, shape = grid["pc_range"], grid["voxel_size"], [int(n) for n in grid["shape"]]
    X, Y, Z = shape
    lead = points.shape[:-1]
    index = torch.zeros((*lead, 8), dtype=torch.long, device=points.device)
    weight = torch.ones((*lead, 8), dtype=points.dtype, device=points.device)
    corner = torch.arange(8, device=points.device)
    for a, (n, stride) in enumerate(zip(shape, (Y * Z, Z, 1), strict=True)):
        u = ((points[..., a] - box[a]) / voxel[a] - 0.5).clamp(0, n - 1)
        i0 = u.floor().clamp(max=max(n - 2, 0))
        f = u - i0
        bit = ((corner >> (2 - a)) & 1).to(points.dtype)  # corner n = 4 i + 2 j + k
        i = (i0[..., None] + bit).clamp(max=n - 1).long()
        index += i * stride
        weight = weight * torch.where(bit.bool(), f[..., None], 1 - f[..., None])
    return index, weight


# -- 7. exact traversal -----------------------------------------------------------------------------
class VoxelWalk:
    """Exact voxel traversal (Amanatides & Woo) of many segments at once, one boundary per step.

    Each `advance` moves every live ray into its next voxel, so a loop costs at most X + Y + Z
    numpy steps whatever the number of rays, and work follows voxels crossed rather than samples
    taken. Rays stop at their `lengths`, at the grid's edge, or when `advance(keep)` drops them.
    """

    def __init__(self, origins: np.ndarray, dirs: np.ndarray, lengths: np.ndarray,
                 pc_range: Sequence[float], voxel_size: Sequence[float], shape: Sequence[int]) -> None:
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


def _compiled_walk():
    """The extension's `mark_crossed` op (same voxels, ~20x faster), or None without it."""
    from renderocc.cuda import loader

    return loader.op_or_none("mark_crossed")


def mark_crossed(hit: np.ndarray, origins: np.ndarray, dirs: np.ndarray, lengths: np.ndarray,
                 pc_range: Sequence[float], voxel_size: Sequence[float]) -> None:
    """Set `hit[x, y, z] = True` for every voxel a segment o + t·d, t ∈ [0, length], passes
    (exactly: a voxel only grazed at a corner counts too).

    Runs the compiled twin of `VoxelWalk` when the renderer extension is available (it repeats
    the walk's float64 arithmetic, so the marks are identical), else the numpy walk."""
    if not hit.flags.c_contiguous:
        raise ValueError("hit grid must be C-contiguous (it is written through a flat view)")
    walk = _compiled_walk() if hit.dtype == np.bool_ and hit.ndim == 3 else None
    if walk is None:
        mark_crossed_numpy(hit, origins, dirs, lengths, pc_range, voxel_size)
        return
    def f64(a: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.reshape(a, shape), np.float64))

    walk(f64(origins, (-1, 3)), f64(dirs, (-1, 3)), f64(lengths, (-1,)), [float(v) for v in pc_range],
         [float(v) for v in voxel_size], torch.from_numpy(hit))


def mark_crossed_numpy(hit: np.ndarray, origins: np.ndarray, dirs: np.ndarray, lengths: np.ndarray,
                       pc_range: Sequence[float], voxel_size: Sequence[float]) -> None:
    """`mark_crossed` with the numpy `VoxelWalk` (the reference the compiled walk is tested against)."""
    flat = hit.reshape(-1)
    walk = VoxelWalk(origins, dirs, lengths, pc_range, voxel_size, hit.shape)
    while walk:
        flat[walk.index()] = True
        walk.advance()


def ends_inside(origins: np.ndarray, dirs: np.ndarray, dist: np.ndarray, grid: dict) -> np.ndarray:
    """Rays whose labelled end point lies strictly inside the grid box (and dist > 0.1 m): the only
    ones rendering can explain. Training, fit and eval all filter label rays with this."""
    end = origins + dirs * dist[:, None]
    lo, hi = np.asarray(grid["pc_range"][:3]), np.asarray(grid["pc_range"][3:])
    return (end > lo).all(1) & (end < hi).all(1) & (dist > 0.1)


WALK_BACKENDS = ("auto", "extension", "numpy")


def first_hits(layers: np.ndarray, origins: np.ndarray, dirs: np.ndarray, grid: dict,
               backend: str = "auto", threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First occupied voxel along each ray, for up to 7 occupancy layers walked together.

    `layers` (L, X, Y, Z) bool (e.g. GT and prediction) share one exact traversal: every step
    reads all layers with one gather of a bit-packed grid, and a ray stops once every layer has
    hit. Returns, per layer and ray, `(voxel (L, R) int64 flat index, dist (L, R), hit (L, R))`:
    the first occupied voxel and the distance where the ray leaves it; a ray that meets nothing
    reports the last voxel inside the grid and the box exit (as SparseOcc's `dvr` kernel); a ray
    that misses the box reports voxel -1 and NaN. Origins may lie outside the box.

    The walk runs in the C++ extension (`backend="extension"`, several times faster) or in
    numpy (`"numpy"`, the fallback); "auto" takes the extension when it builds. The C++ mirrors
    the numpy arithmetic operation by operation, so both give identical results. `threads` caps
    the threads (default: torch's for the extension, up to 2 for numpy).
    """
    if backend not in WALK_BACKENDS:
        raise ValueError(f"first_hits: backend must be one of {WALK_BACKENDS}, not {backend!r}")
    layers = np.asarray(layers, bool)
    L = layers.shape[0]
    if not 1 <= L <= 7:
        raise ValueError("first_hits: 1 to 7 layers")
    bits = _packed_layers(layers)
    o = np.ascontiguousarray(np.asarray(origins, np.float64).reshape(-1, 3))
    d = np.ascontiguousarray(np.asarray(dirs, np.float64).reshape(-1, 3))
    ops = None
    if backend != "numpy":
        from renderocc.cuda import loader

        ops = loader.load() if backend == "extension" else loader.load_or_warn()
    if ops is not None:
        out = ops.first_hits(torch.from_numpy(bits), torch.from_numpy(o), torch.from_numpy(d),
                             [float(x) for x in grid["pc_range"][:3]], [float(x) for x in grid["voxel_size"]],
                             list(layers.shape[1:]), L, threads or 0)
        voxel, dist, hit = (t.numpy() for t in out)
        return voxel, dist, hit
    start = _walk_start(bits, o, d, grid)
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


BORDER = np.uint8(128)  # bit 7 of the packed grid: the one-voxel frame around it


def _packed_layers(layers: np.ndarray) -> np.ndarray:
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


def _walk_start(bits: np.ndarray, o: np.ndarray, d: np.ndarray, grid: dict) -> WalkStart:
    shape = np.array(bits.shape, np.int64) - 2
    lo = np.asarray(grid["pc_range"][:3], np.float64)
    vs = np.asarray(grid["voxel_size"], np.float64)
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
    parts = max(1, min(threads or min(2, os.cpu_count() or 1), n // 4096 or 1))
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
        if live < 0.75 * len(ray):
            ray, flat, found, cur = ray[alive], flat[alive], found[alive], cur[alive]
            tx, ty, tz, dx, dy, dz = tx[alive], ty[alive], tz[alive], dx[alive], dy[alive], dz[alive]
            sx, sy, sz = sx[alive], sy[alive], sz[alive]
    return voxel, dist, hit
