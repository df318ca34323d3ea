"""A 32-ring spinning LiDAR (HDL-32E-like, as on nuScenes' LIDAR_TOP) ray-cast against the world.

Points are written in the LiDAR frame (x right, y forward, z up), as in nuScenes; the sweep is
treated as instantaneous at its timestamp (i.e. motion-compensated), so every point, label and
instance is exact at that time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from renderocc.synth import conditions as cond
from renderocc.synth.camera import value_noise
from renderocc.synth.geometry import rot_z
from renderocc.synth.materials import APPEARANCE, SYNTH_NAMES
from renderocc.synth.raycast import Window, cast
from renderocc.synth.world import World, lane_paint

RINGS = 32
ELEVATIONS = np.deg2rad(np.linspace(-30.67, 10.67, RINGS))
AZIMUTHS = 1084  # 0.33 deg at 20 Hz
MAX_RANGE = 70.0
MIN_RANGE = 1.0
TRANSLATION = (0.943713, 0.0, 1.84023)
YAW = -np.pi / 2  # LiDAR y axis points forward


def lidar_to_ego() -> np.ndarray:
    """4x4 LiDAR -> ego (the calibrated_sensor record)."""
    m = np.eye(4)
    m[:3, :3] = rot_z(YAW)
    m[:3, 3] = TRANSLATION
    return m


class LidarGrid:
    """Beams as a (ring, azimuth) grid; windows from the angular extent of bounding boxes."""

    def __init__(self, azimuths: int = AZIMUTHS):
        self.n_az = azimuths
        self.step = 2 * np.pi / azimuths
        az = beam_azimuths(azimuths)
        el = ELEVATIONS[:, None]
        self.dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                              np.sin(el) * np.ones_like(az)], -1).astype(np.float32)

    def windows(self, corners: np.ndarray, t_max: float) -> list[list[Window]]:
        ctr = corners.mean(1)
        rad = np.linalg.norm(corners[:, 0, :2] - ctr[:, :2], axis=1)
        hd = np.hypot(ctr[:, 0], ctr[:, 1])
        dmin, dmax = np.maximum(hd - rad, 0.3), hd + rad
        zlo, zhi = corners[..., 2].min(1), corners[..., 2].max(1)
        el_hi = np.arctan2(zhi, np.where(zhi > 0, dmin, dmax))
        el_lo = np.arctan2(zlo, np.where(zlo < 0, dmin, dmax))
        r0 = np.searchsorted(ELEVATIONS, el_lo - 1e-3)
        r1 = np.searchsorted(ELEVATIONS, el_hi + 1e-3, side="right")
        az_c = np.arctan2(ctr[:, 1], ctr[:, 0])
        rel = np.mod(np.arctan2(corners[..., 1], corners[..., 0]) - az_c[:, None] + np.pi, 2 * np.pi) - np.pi
        a0, a1 = az_c + rel.min(1), az_c + rel.max(1)
        full = (hd <= rad + 0.5) | (a1 - a0 > np.pi)
        c0 = np.floor((a0 + np.pi) / self.step).astype(int) - 1
        c1 = np.floor((a1 + np.pi) / self.step).astype(int) + 2
        out: list[list[Window]] = []
        n = self.n_az
        for i in range(len(corners)):
            if dmin[i] > t_max or r1[i] <= r0[i]:
                out.append([])
            elif full[i] or c1[i] - c0[i] >= n:
                out.append([(r0[i], r1[i], 0, n)])
            elif c0[i] < 0:
                out.append([(r0[i], r1[i], c0[i] + n, n), (r0[i], r1[i], 0, min(c1[i], n))])
            elif c1[i] > n:
                out.append([(r0[i], r1[i], c0[i], n), (r0[i], r1[i], 0, c1[i] - n)])
            else:
                out.append([(r0[i], r1[i], c0[i], c1[i])])
        return out


@dataclass
class Scan:
    """One LiDAR sweep: points (N, 5) float32 in the LiDAR frame and per-point truth."""

    points: np.ndarray
    label: np.ndarray  # uint8 lidarseg index
    instance: np.ndarray  # int32 object index, -1 for stuff
    moving: np.ndarray  # uint8
    beams: np.ndarray | None = None  # (RINGS, n_az) uint8 BEAM_* status of every beam of the sweep


# Per-beam truth (synth_truth/beams/): what each (ring, azimuth) beam of a sweep did. Only
# BEAM_NO_HIT is evidence of free space; a dropout or a too-near hit returned nothing either,
# but something was there.
BEAM_RETURN = 0     # a point in the cloud
BEAM_NO_HIT = 1     # nothing within MAX_RANGE (sky, or a surface beyond range): free along the beam
BEAM_DROPOUT = 2    # a surface within range, but the return was dropped (random 2 %)
BEAM_TOO_NEAR = 3   # a surface closer than MIN_RANGE
BEAM_SPECULAR = 4   # wet pavement at grazing incidence: mirrored away, no return (synth/conditions.py)


def beam_azimuths(n_az: int = AZIMUTHS) -> np.ndarray:
    """Azimuth (rad, LiDAR frame, from +x towards +y) of each beam column of `LidarGrid`."""
    return -np.pi + (np.arange(n_az) + 0.5) * (2 * np.pi / n_az)


def _specular(world: World, hits, rng: np.random.Generator) -> np.ndarray:
    """(RINGS, n_az) bool: beams whose return from wet pavement is mirrored away."""
    ground = hits.pid == -1
    p = hits.points[ground]
    paved = cond.PAVED[world.ground(p[:, 0], p[:, 1])[0]]
    wet = np.where(paved, cond.wetness(p, value_noise), 0.0)
    prob = cond.specular_drop_probability(np.abs(hits.dirs[ground][:, 2]), wet)
    out = np.zeros(hits.t.shape, bool)
    out[ground] = rng.uniform(size=len(prob)) < prob
    return out


def scan(world: World, t: float, rng: np.random.Generator, grid: LidarGrid | None = None) -> Scan:
    """Sweep the LiDAR at time t (seconds) from the ego pose at t."""
    grid = grid or LidarGrid()
    prims = world.prims_at(t)
    pose = world.ego_pose(t) @ lidar_to_ego()
    hits = cast(grid, pose, prims, MAX_RANGE)
    # firing order: azimuth-major, all rings per azimuth
    drop = rng.uniform(size=hits.t.size) <= 0.02   # in firing order (azimuth-major), as drawn before
    status = np.full(hits.t.shape, BEAM_RETURN, np.uint8)
    status[hits.t >= MAX_RANGE] = BEAM_NO_HIT
    status[drop.reshape(grid.n_az, RINGS).T & (status == BEAM_RETURN)] = BEAM_DROPOUT
    status[hits.t < MIN_RANGE] = BEAM_TOO_NEAR
    if world.wet:  # drawn after the dry draws: a wet sweep is the dry one minus mirrored returns
        status[_specular(world, hits, rng) & (status == BEAM_RETURN)] = BEAM_SPECULAR
    tt, pid = hits.t.T.ravel(), hits.pid.T.ravel()
    dirs_s = grid.dirs.transpose(1, 0, 2).reshape(-1, 3)
    dirs_w = hits.dirs.transpose(1, 0, 2).reshape(-1, 3)
    normal = hits.normal.transpose(1, 0, 2).reshape(-1, 3)
    world_pts = hits.points.transpose(1, 0, 2).reshape(-1, 3)
    ring = np.tile(np.arange(RINGS), grid.n_az)
    keep = status.T.ravel() == BEAM_RETURN   # firing order, like tt
    tt, pid, dirs_s, dirs_w = tt[keep], pid[keep], dirs_s[keep], dirs_w[keep]
    normal, world_pts, ring = normal[keep], world_pts[keep], ring[keep]

    label = np.zeros(len(tt), np.uint8)
    refl = np.zeros(len(tt), np.float32)
    inst = np.full(len(tt), -1, np.int32)
    obj = pid >= 0
    label[obj] = prims.label[pid[obj]]
    refl[obj] = prims.reflect[pid[obj]]
    inst[obj] = prims.obj[pid[obj]]
    g = pid == -1
    glab, _ = world.ground(world_pts[g, 0], world_pts[g, 1])
    label[g] = glab

    lut = np.array([APPEARANCE.get(n, ((0, 0, 0), 20.0))[1] for n in SYNTH_NAMES], np.float32)
    refl[g] = np.where(lane_paint(world, world_pts[g, 0], world_pts[g, 1]), 80.0, lut[glab])
    cos = np.abs(np.sum(normal * dirs_w, 1))
    intensity = refl * (0.35 + 0.65 * cos) * rng.uniform(0.85, 1.15, len(tt))
    rng_noise = rng.normal(0.0, 0.01, len(tt)).astype(np.float32)
    xyz = dirs_s * (tt + rng_noise)[:, None]
    pts = np.concatenate([xyz, np.clip(intensity, 0, 255)[:, None], ring[:, None]], 1).astype(np.float32)
    speeds = np.array([i.speed for i in world.instances] + [0.0])
    moving = (speeds[inst] > 0.05).astype(np.uint8)  # inst == -1 picks the trailing 0
    return Scan(pts, label, inst, moving, status)
