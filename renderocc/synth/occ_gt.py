"""Occ3D-format ground truth of a synthetic keyframe: semantics and the two visibility masks.

Two truths (`renderocc synth nuscenes --gt`):

* `occ3d` (default), the way Occ3D-nuScenes builds it: every LiDAR return of the whole scene
  (keyframes and sweeps) is accumulated into the keyframe's ego frame. Points on objects that are
  annotated somewhere in the scene move with their box (stored in the box frame at the point's
  time, placed with the box at the keyframe; an object without a box at the keyframe contributes
  nothing); all other points are static and go through the ego poses. A voxel is occupied when
  any point falls in it and takes the majority class of its points (ties: objects, then static
  structure, then flat ground, then the lower class index). Occ3D also densifies with meshes and
  refines with images; we do not, so a surface no beam ever hits stays free, as in raw Occ3D.
* `world`: occupancy from the world's solids. Each 0.4 m voxel takes the class covering most of
  its 4x4x4 sub-samples (samples reach the voxel faces, so any surface crossing a voxel marks
  it); ties as above. The ground is a 0.2 m slab just below z = 0, so only the surface layer is
  occupied. Cameras see surfaces here that no LiDAR beam hits.

Masks (both truths), as Occ3D publishes them: a ray is cast from the sensor's optical centre to
the centre of every occupied voxel it can see (mask_lidar: all of them, from the LiDAR at the
keyframe; mask_camera: those in front of a camera whose centre projects inside its W x H image,
from that camera's centre at its own trigger time, union over the six cameras). Voxels on a ray
are observed up to and including the first occupied voxel (exact Amanatides-Woo traversal), so
an occupied voxel hidden behind another is unobserved. Rays to a voxel centre graze the voxels in
front of it, so a ray to far ground usually stops at a nearer ground voxel: far ground is
observed only through the rays to even farther targets, as in Occ3D.
"""


from __future__ import annotations

import functools

import numpy as np

from renderocc.classes import FREE, LIDARSEG_STANDARD_ORDER, LIDARSEG_TO_OCC3D, NUM_SEMANTIC
from renderocc.geometry import OCC3D_GRID
from renderocc.geometry.traversal import VoxelWalk
from renderocc.synth.geometry import apply
from renderocc.synth.world import BOX, CYLINDER, ClassTable, Prims, World

GRID = OCC3D_GRID
PC_RANGE = np.asarray(GRID.box)
VOXEL = GRID.voxel[0]  # Occ3D's voxels are cubes
SHAPE = GRID.shape
SUB = np.linspace(-0.199, 0.199, 4) * (VOXEL / 0.4)
GROUND_LAYER = 2  # the voxel layer [-0.2, 0.2] that holds the ground surface
TO_OCC = np.array([LIDARSEG_TO_OCC3D[n] for n in LIDARSEG_STANDARD_ORDER], np.uint8)
PRIORITY = np.array([3] * 11 + [1] * 4 + [2] * 2, np.int32)  # things > static > flat
TIE_RANK = (3 - PRIORITY) * 32 + np.arange(NUM_SEMANTIC)  # lower wins a tie: priority, then index
# Occ3D's classes for the standard lidarseg indices (a world without its own `classes`)
OCC3D_TABLE = ClassTable(np.concatenate([TO_OCC, np.zeros(256 - len(TO_OCC), np.uint8)]), PRIORITY)


def class_table(world: World) -> ClassTable:
    """The world's occupancy classes (Occ3D's unless it brings its own, e.g. the airside world)."""
    return world.classes if world.classes is not None else OCC3D_TABLE


def _axis_samples(axis: int, lo: float, hi: float) -> tuple[int, int, np.ndarray] | None:
    """Voxel index range [i0, i1) overlapping [lo, hi] on `axis`, and its sub-sample coordinates."""
    n = SHAPE[axis]
    i0 = max(int(np.floor((lo - PC_RANGE[axis]) / VOXEL)), 0)
    i1 = min(int(np.floor((hi - PC_RANGE[axis]) / VOXEL)) + 1, n)
    if i1 <= i0:
        return None
    centres = PC_RANGE[axis] + (np.arange(i0, i1) + 0.5) * VOXEL
    return i0, i1, (centres[:, None] + SUB[None]).ravel()


def voxelise(prims: Prims, ground_occ: np.ndarray, table: ClassTable = OCC3D_TABLE) -> np.ndarray:
    """Semantics (200, 200, 16) uint8 from primitives in the ego frame and ground classes.

    `ground_occ` is the class of the ground at each xy sub-sample, (800, 800); free = table.num.
    """
    n_cls = table.num
    counts = np.zeros((n_cls,) + SHAPE, np.int16)
    gl = ground_occ.reshape(SHAPE[0], 4, SHAPE[1], 4)
    for c in np.flatnonzero(np.bincount(ground_occ.ravel(), minlength=n_cls)[:n_cls]):
        counts[c, :, :, GROUND_LAYER] += 2 * (gl == c).sum((1, 3), dtype=np.int16)
    lo, hi = prims.bounds()
    occ = table.to_class[prims.label]
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
    sem = np.full(SHAPE, n_cls, np.uint8)
    best = np.zeros(SHAPE, np.int32)
    for c in np.argsort(-table.priority, kind="stable"):  # equal counts: the higher priority keeps it
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
    return class_table(world).to_class[label]


def semantics(world: World, t: float) -> np.ndarray:
    """Occ3D semantics at time t in the ego frame at t."""
    ego = world.ego_pose(t)
    prims = world.prims_at(t).transformed(np.linalg.inv(ego))
    lo, hi = prims.bounds()
    near = (hi[:, 0] > PC_RANGE[0]) & (lo[:, 0] < PC_RANGE[3]) & (hi[:, 1] > PC_RANGE[1]) \
        & (lo[:, 1] < PC_RANGE[4])
    sub = Prims(*(getattr(prims, f)[near] for f in Prims.__dataclass_fields__))
    return voxelise(sub, ground_samples(world, ego), class_table(world))


@functools.lru_cache(maxsize=1)
def voxel_centres() -> np.ndarray:
    """(200 * 200 * 16, 3) float32 voxel centres in [x, y, z] C order."""
    axes = [GRID.axis_centres(a) for a in range(3)]
    g = np.meshgrid(*axes, indexing="ij")
    return np.stack([a.ravel() for a in g], 1).astype(np.float32)


def lidar_semantics(points: np.ndarray, occ_class: np.ndarray, table: ClassTable = OCC3D_TABLE) -> np.ndarray:
    """Semantics (200, 200, 16) uint8 voxelised from points (N, 3) in the grid frame.

    A voxel holding any point is occupied by the majority Occ3D class `occ_class` (N,) of its
    points; ties go by `TIE_RANK` (objects, then static, then flat, then the lower index).
    """
    q = (np.asarray(points, np.float64) - PC_RANGE[:3]) / VOXEL
    ok = np.ones(len(q), bool)
    flat = np.zeros(len(q), np.int64)
    for a, mul in ((0, SHAPE[1] * SHAPE[2]), (1, SHAPE[2]), (2, 1)):
        qa = q[:, a]
        ok &= (qa >= 0) & (qa < SHAPE[a])
        flat += qa.astype(np.int64) * mul  # truncation == floor where ok
    flat, cls = flat[ok], occ_class[ok]
    n = int(np.prod(SHAPE))
    sem = np.full(n, table.num, np.uint8)
    best = np.zeros(n, np.int64)
    tie_rank = (3 - table.priority) * 64 + np.arange(table.num)
    for c in np.argsort(tie_rank, kind="stable"):  # strict '>' below: earlier (higher) rank keeps ties
        sel = flat[cls == c]
        if len(sel):
            count = np.bincount(sel, minlength=n)
            better = count > best
            best[better] = count[better]
            sem[better] = c
    return sem.reshape(SHAPE)


def observed(occupied: np.ndarray, origins: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Voxels on the rays origins -> targets, each up to and including its first occupied voxel.

    occupied (200, 200, 16) bool; origins (N, 3) or (3,) and targets (N, 3) in the grid frame.
    Exact traversal, so a voxel a ray only clips at an edge counts (and can stop it).
    """
    occ = np.ascontiguousarray(occupied).reshape(-1)
    seen = np.zeros(occ.size, bool)
    targets = np.asarray(targets, np.float64)
    rel = targets - origins
    dist = np.linalg.norm(rel, axis=1)
    rel /= np.maximum(dist, 1e-9)[:, None]
    walk = VoxelWalk(np.broadcast_to(origins, rel.shape), rel, dist, GRID)
    while walk:
        i = walk.index()
        seen[i] = True
        walk.advance(~occ[i])
    return seen.reshape(SHAPE)


def lidar_mask(semantics: np.ndarray, origin: np.ndarray, free: int = FREE) -> np.ndarray:
    """Occ3D mask_lidar: voxels seen on rays from the LiDAR `origin` (3,) to every occupied voxel."""
    occupied = semantics != free
    return observed(occupied, np.asarray(origin, np.float64), voxel_centres()[occupied.ravel()])


def camera_mask(semantics: np.ndarray, cameras: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]],
                free: int = FREE) -> np.ndarray:
    """Occ3D mask_camera: the union over cameras (grid_to_cam 4x4, K 3x3, (W, H)) of the voxels seen
    on rays from the camera centre to every occupied voxel centre that projects into its image.

    Pixel (u, v) covers [u - 0.5, u + 0.5) (devkit convention), so the image is u in [-0.5, W - 0.5).
    """
    occupied = semantics != free
    centres = voxel_centres()[occupied.ravel()].astype(np.float64)
    origins, targets = [], []
    for grid_to_cam, k, (w, h) in cameras:
        pc = centres @ grid_to_cam[:3, :3].T + grid_to_cam[:3, 3]
        z = pc[:, 2]
        front = z > 1e-6
        zf = np.where(front, z, 1.0)
        u = k[0, 0] * pc[:, 0] / zf + k[0, 1] * pc[:, 1] / zf + k[0, 2]
        v = k[1, 1] * pc[:, 1] / zf + k[1, 2]
        inside = front & (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
        targets.append(centres[inside])
        origins.append(np.broadcast_to(np.linalg.inv(grid_to_cam)[:3, 3], (int(inside.sum()), 3)))
    return observed(occupied, np.concatenate(origins), np.concatenate(targets))


def cloud_piece(world: World, t: float, sensor_to_local: np.ndarray, points: np.ndarray, label: np.ndarray,
                instance: np.ndarray) -> dict[str, np.ndarray]:
    """One scan's returns, ready to accumulate over the scene.

    Object points keep both frames because whether a point moves with a box is only known once the
    whole scene is annotated. points (N, 3) in the sensor frame at time t; label lidarseg indices;
    instance object index or -1. Returns `local` (N, 3) scene-local, `cls` (N,) Occ3D class,
    `instance` (N,), and `objf` (M, 3): the points with instance >= 0 in their object's frame at t.
    """
    local = apply(sensor_to_local, points.astype(np.float64))
    obj = instance >= 0
    pose = world.object_poses(t)[instance[obj]]
    c, s = np.cos(pose[:, 2]), np.sin(pose[:, 2])
    dx, dy = local[obj, 0] - pose[:, 0], local[obj, 1] - pose[:, 1]
    objf = np.stack([c * dx + s * dy, -s * dx + c * dy, local[obj, 2]], 1)
    return {"local": local.astype(np.float32), "cls": class_table(world).to_class[label],
            "instance": instance.astype(np.int32), "objf": objf.astype(np.float32)}


def accumulate(pieces: list[dict[str, np.ndarray]], world: World, t: float, boxed: np.ndarray,
               present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All returns of a scene in the ego frame at time t: (points (N, 3), Occ3D class (N,)).

    `boxed[k]`: object k has a box somewhere in the scene (its points move with it); `present[k]`:
    it has one at t (else its points are dropped). Points of never-boxed objects count as static,
    as in Occ3D, where only points inside annotation boxes are moved.
    """
    local = np.concatenate([p["local"] for p in pieces])
    cls = np.concatenate([p["cls"] for p in pieces])
    inst = np.concatenate([p["instance"] for p in pieces])
    objf = np.concatenate([p["objf"] for p in pieces])
    is_obj = inst >= 0
    k = inst[is_obj]
    boxed_pt = np.zeros(len(inst), bool)
    boxed_pt[is_obj] = boxed[k]
    keep = boxed[k] & present[k]
    ego = world.ego_pose(t)
    ec, es = ego[0, 0], ego[1, 0]  # planar ego: yaw rotation, z = 0
    # static points: scene-local -> ego
    st = local[~boxed_pt].astype(np.float64)
    dx, dy = st[:, 0] - ego[0, 3], st[:, 1] - ego[1, 3]
    static = np.stack([ec * dx + es * dy, -es * dx + ec * dy, st[:, 2]], 1)
    # object points: object frame at the point's time -> the object's pose at t, in the ego frame
    pose = world.object_poses(t)
    px, py = pose[:, 0] - ego[0, 3], pose[:, 1] - ego[1, 3]
    ox, oy, yaw = ec * px + es * py, -es * px + ec * py, pose[:, 2] - np.arctan2(es, ec)
    k, q = k[keep], objf[keep].astype(np.float64)
    c, sn = np.cos(yaw)[k], np.sin(yaw)[k]
    moved = np.stack([ox[k] + c * q[:, 0] - sn * q[:, 1], oy[k] + sn * q[:, 0] + c * q[:, 1], q[:, 2]], 1)
    return np.concatenate([static, moved]), np.concatenate([cls[~boxed_pt], cls[is_obj][keep]])
