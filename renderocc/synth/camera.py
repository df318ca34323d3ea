"""Six nuScenes-like cameras: rig, pinhole ray grids, and shaded, textured, noisy rendering.

Cameras are triggered as the LiDAR sweep passes their field of view, so each has its own
timestamp (an offset before the LiDAR keyframe) and hence its own ego pose and world state.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from renderocc.synth import conditions as cond
from renderocc.synth import materials as mat
from renderocc.synth.geometry import pose_matrix
from renderocc.synth.raycast import Hits, Window, cast
from renderocc.synth.world import World, lane_paint

FULL_SIZE = (1600, 900)
NEAR = 0.1
FAR = 120.0  # beyond this, fog (see shade) has hidden everything
FOG = 70.0  # metres; haze = 1 - exp(-(d / FOG)^2)
MIRROR_Z = np.diag([1.0, 1.0, -1.0, 1.0])  # reflection in the ground plane z = 0


@dataclass(frozen=True)
class CameraSpec:
    """A camera of the rig at nuScenes' full resolution."""

    name: str
    yaw_deg: float  # optical axis heading in the ego frame
    translation: tuple[float, float, float]
    focal: float
    principal: tuple[float, float]
    offset_us: int  # trigger time relative to the LiDAR keyframe


# Mounting, focal lengths and trigger offsets after nuScenes' rig.
RIG = (
    CameraSpec("CAM_FRONT", 0.0, (1.70, 0.016, 1.51), 1266.4, (816.3, 491.5), -34_000),
    CameraSpec("CAM_FRONT_RIGHT", -55.0, (1.55, -0.493, 1.50), 1260.8, (808.0, 495.3), -26_000),
    CameraSpec("CAM_BACK_RIGHT", -110.0, (1.01, -0.481, 1.56), 1259.5, (807.3, 501.2), -18_000),
    CameraSpec("CAM_BACK", 180.0, (0.03, 0.003, 1.58), 809.2, (829.2, 481.8), -9_000),
    CameraSpec("CAM_BACK_LEFT", 110.0, (1.04, 0.485, 1.59), 1256.7, (792.1, 492.8), 160),
    CameraSpec("CAM_FRONT_LEFT", 55.0, (1.52, 0.495, 1.51), 1272.6, (826.6, 479.8), -42_000),
)
CAMERA_NAMES = [c.name for c in RIG]


def intrinsic(spec: CameraSpec, size: tuple[int, int]) -> np.ndarray:
    """3x3 K for an image of `size` (W, H), scaled from the full-resolution calibration."""
    sx, sy = size[0] / FULL_SIZE[0], size[1] / FULL_SIZE[1]
    return np.array([[spec.focal * sx, 0.0, spec.principal[0] * sx],
                     [0.0, spec.focal * sy, spec.principal[1] * sy], [0.0, 0.0, 1.0]])


def cam_to_ego(spec: CameraSpec) -> np.ndarray:
    """4x4 camera (x right, y down, z forward) -> ego."""
    y = np.deg2rad(spec.yaw_deg)
    fwd = np.array([np.cos(y), np.sin(y), 0.0])
    right = np.array([np.sin(y), -np.cos(y), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    return pose_matrix(np.stack([right, down, fwd], 1), spec.translation)


class PinholeGrid:
    """One ray per pixel (pixel centres at integer u, v, devkit/OpenCV convention)."""

    def __init__(self, k: np.ndarray, size: tuple[int, int]):
        self.k, self.size = k, size
        w, h = size
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        d = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1)
        self.zscale = np.linalg.norm(d, axis=-1).astype(np.float32)  # ray length per unit z
        self.dirs = (d / self.zscale[..., None]).astype(np.float32)

    def windows(self, corners: np.ndarray, t_max: float) -> list[list[Window]]:
        w, h = self.size
        pts = _clip_near(corners)  # (M, 8 + 12, 3), NaN rows for points behind the near plane
        z = pts[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            u = self.k[0, 0] * pts[..., 0] / z + self.k[0, 2]
            v = self.k[1, 1] * pts[..., 1] / z + self.k[1, 2]
            umin, umax = np.nanmin(np.where(z > 0, u, np.nan), 1), np.nanmax(np.where(z > 0, u, np.nan), 1)
            vmin, vmax = np.nanmin(np.where(z > 0, v, np.nan), 1), np.nanmax(np.where(z > 0, v, np.nan), 1)
        ok = (corners[..., 2] > NEAR).any(1) & (np.linalg.norm(corners, axis=2).min(1) < t_max)
        ok &= (umax >= -1) & (umin <= w) & (vmax >= -1) & (vmin <= h)
        c0 = np.clip(np.floor(np.nan_to_num(umin)) - 1, 0, w).astype(int)
        c1 = np.clip(np.floor(np.nan_to_num(umax)) + 2, 0, w).astype(int)
        r0 = np.clip(np.floor(np.nan_to_num(vmin)) - 1, 0, h).astype(int)
        r1 = np.clip(np.floor(np.nan_to_num(vmax)) + 2, 0, h).astype(int)
        ok &= (c1 > c0) & (r1 > r0)
        return [[(r0[i], r1[i], c0[i], c1[i])] if ok[i] else [] for i in range(len(corners))]


_EDGES = np.array([(a, a | 1 << b) for a in range(8) for b in range(3) if not a >> b & 1])


def _clip_near(corners: np.ndarray) -> np.ndarray:
    """Box corners in front of the near plane plus the box edges' crossings of it (NaN elsewhere)."""
    a, b = corners[:, _EDGES[:, 0]], corners[:, _EDGES[:, 1]]
    za, zb = a[..., 2], b[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (NEAR - za) / (zb - za)
        cross = a + s[..., None] * (b - a)
    cross[~((za - NEAR) * (zb - NEAR) < 0)] = np.nan
    front = np.where((corners[..., 2] > NEAR)[..., None], corners, np.nan)
    return np.concatenate([front, cross], 1)


@functools.lru_cache(maxsize=8)
def _noise_table(seed: int) -> np.ndarray:
    """A 256 x 256 tile of uniform values, flattened; the lattice of the value noise."""
    return np.random.default_rng(1000 + seed).random(256 * 256, dtype=np.float32)


def value_noise(p: np.ndarray, scale: float, seed: int = 0) -> np.ndarray:
    """Blocky value noise in [0, 1) of world positions (N, 3) at spatial frequency `scale` (1/m).

    Positions are folded to 2D as (x + 0.57 z, y - 0.57 z), so ground, walls along either axis
    and roofs all get 2D texture, then looked up in a tiling random table (cheap and deterministic).
    """
    with np.errstate(invalid="ignore"):
        u = np.nan_to_num((p[:, 0] + 0.57 * p[:, 2]) * scale, posinf=0.0, neginf=0.0)
        v = np.nan_to_num((p[:, 1] - 0.57 * p[:, 2]) * scale, posinf=0.0, neginf=0.0)
    iu = np.floor(u).astype(np.int64) & 255
    iv = np.floor(v).astype(np.int64) & 255
    return _noise_table(seed)[iu * 256 + iv]


def _tex_factor(k: int, p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Multiplicative texture of texture id k at world points p (N, 3) with normals n."""
    if k == mat.TEX_ASPHALT:
        return 0.8 + 0.25 * value_noise(p, 7.0) + 0.1 * value_noise(p, 0.5, 1)
    if k == mat.TEX_TILES:
        grout = (np.mod(p[:, 0], 1.2) < 0.06) | (np.mod(p[:, 1], 1.2) < 0.06)
        return np.where(grout, 0.6, 0.9 + 0.15 * value_noise(p, 5.0))
    if k == mat.TEX_GRASS:
        return 0.7 + 0.35 * value_noise(p, 7.0) + 0.2 * value_noise(p, 0.5, 1) - 0.1 * value_noise(p, 2.0, 2)
    if k == mat.TEX_GRAVEL:
        return 0.75 + 0.35 * value_noise(p, 9.0)
    if k == mat.TEX_FACADE:
        along = np.where(np.abs(n[:, 0]) > np.abs(n[:, 1]), p[:, 1], p[:, 0])
        zf = np.mod(p[:, 2], 3.0)
        window = (zf > 1.0) & (zf < 2.3) & (np.mod(along, 3.0) < 1.8) & (np.abs(n[:, 2]) < 0.5)
        return np.where(window, 0.35 + 0.1 * value_noise(p, 2.0), 0.9 + 0.15 * value_noise(p, 7.0))
    if k == mat.TEX_FOLIAGE:
        return 0.55 + 0.6 * value_noise(p, 5.0) + 0.15 * value_noise(p, 2.0, 1)
    if k == mat.TEX_PAINT:
        return 0.95 + 0.1 * value_noise(p, 7.0)
    if k == mat.TEX_GLASS:
        return 0.4 + 0.15 * value_noise(p, 2.0)
    if k == mat.TEX_TYRE:
        return 0.25 + 0.05 * value_noise(p, 7.0)
    if k == mat.TEX_CLOTH:
        return 0.8 + 0.3 * value_noise(p, 7.0)
    if k == mat.TEX_BARK:
        return 0.9 + 0.2 * value_noise(p, 12.0)
    if k == mat.TEX_STRIPES:
        return np.where(np.mod(p[:, 2], 0.5) < 0.25, 1.0, 1.6)
    return np.ones(len(p), np.float32)


def _texture(tex: np.ndarray, p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Multiplicative texture (N,) by texture id at world points p with normals n."""
    f = np.ones(len(tex), np.float32)
    for k in np.flatnonzero(np.bincount(tex.astype(np.int64))):
        if k != mat.TEX_PLAIN:
            m = np.flatnonzero(tex == k)
            f[m] = _tex_factor(int(k), p[m], n[m])
    return f


@functools.lru_cache(maxsize=4)
def _grain(h: int, w: int) -> np.ndarray:
    """A fixed tile of Gaussian sensor noise (sigma 4 grey levels); images use random crops of it."""
    return np.random.default_rng(12345).standard_normal((h + 64, w + 64, 3), dtype=np.float32) * 4.0


def _radiance(world: World, hits: Hits, prims) -> np.ndarray:
    """Noise-free RGB (H*W, 3) float32 of per-pixel hits: class colour x texture x light + haze, sky.

    Day: Lambert under the sun plus sky light. Night: a low ambient plus the pole floodlights
    (renderocc/synth/conditions.py), lamp heads glowing; sky and haze dark."""
    pid = hits.pid.ravel()
    p = hits.points.reshape(-1, 3)
    n = hits.normal.reshape(-1, 3)
    night = world.light != 1.0
    lut_col = np.concatenate([np.zeros((2, 3), np.float32), prims.colour]) * np.float32(255.0)
    lut_tex = np.concatenate([np.zeros(2, np.int8), prims.texture])
    col = lut_col[pid + 2]
    tex = lut_tex[pid + 2]
    gi = np.flatnonzero(pid == -1)
    glab, gtex = world.ground(p[gi, 0], p[gi, 1])
    paint = lane_paint(world, p[gi, 0], p[gi, 1]) & (glab == mat.LABEL["flat.driveable_surface"])
    col[gi] = np.where(paint[:, None], np.float32(230.0), world.ground_colour(glab) * np.float32(255.0))
    tex[gi] = np.where(paint, mat.TEX_PLAIN, gtex)
    d2 = np.minimum(hits.t.ravel(), 1e3) * np.float32(1 / FOG)
    keep = np.exp(-d2 * d2)  # 1 - haze
    sun = 0.45 + 0.65 * np.clip(n @ world.sun.astype(np.float32), 0.0, 1.0)
    if night:
        sun = sun * np.float32(world.light)
        if world.lamps is not None and len(world.lamps):
            sun = sun + cond.lamp_light(world.lamps, p, n, hits.origin)
            head = np.flatnonzero(pid >= 0)
            head = head[(prims.label[pid[head]] == mat.LABEL["airside.light_pole"])
                        & (prims.texture[pid[head]] == mat.TEX_GLASS)]
            sun[head] = cond.LAMP_EMISSION
    light = sun * _texture(tex, p, n) * keep
    sky = np.float32(cond.NIGHT_SKY if night else 1.0)
    horizon = mat.SKY_HORIZON.astype(np.float32) * np.float32(255.0) * sky
    rgb = col * light[:, None]
    rgb += (1.0 - keep)[:, None] * horizon
    si = np.flatnonzero(pid == -2)
    d = hits.dirs.reshape(-1, 3)[si]
    up = np.sqrt(np.clip(d[:, 2], 0.0, 1.0))[:, None]
    layer = np.zeros_like(d)  # a cloud layer 500 m up, seen in perspective
    layer[:, :2] = d[:, :2] * (500.0 / np.maximum(d[:, 2:], 0.05))
    clouds = (value_noise(layer, 1 / 80.0, 3) * 0.7 + value_noise(layer, 1 / 25.0, 4) * 0.3)[:, None] \
        * up * np.float32(0.12 * 255.0)
    zenith = mat.SKY_ZENITH.astype(np.float32) * np.float32(255.0) * sky
    rgb[si] = horizon + (zenith - horizon) * up + clouds * sky
    return rgb


def _wet(world: World, hits: Hits, mirror: Hits, prims, rgb: np.ndarray) -> np.ndarray:
    """Wet paved ground as a mirror: blend in the scene mirrored in the ground plane (Fresnel x water
    cover), and streak bright reflections (lamps, sunlit fuselages) vertically as glare."""
    h, w = hits.t.shape
    gi = np.flatnonzero(hits.pid.ravel() == -1)
    p = hits.points.reshape(-1, 3)[gi]
    gi = gi[cond.PAVED[world.ground(p[:, 0], p[:, 1])[0]]]
    if not len(gi):
        return rgb
    p = hits.points.reshape(-1, 3)[gi]
    r = cond.fresnel(-hits.dirs.reshape(-1, 3)[gi, 2], cond.wetness(p, value_noise))[:, None]
    refl = _radiance(world, mirror, prims)
    out = rgb.copy()
    out[gi] = (1.0 - r) * rgb[gi] + r * refl[gi]
    bright = np.zeros((h * w, 3), np.float32)
    bright[gi] = r * np.maximum(refl[gi] - cond.GLARE_THRESHOLD, 0.0)
    k = max(3, int(round(cond.GLARE_LENGTH * h)) | 1)
    streak = cv2.blur(bright.reshape(h, w, 3), (1, k), borderType=cv2.BORDER_CONSTANT).reshape(-1, 3)
    return out + streak * np.float32(k / 3.0)


def shade(world: World, hits: Hits, prims, rng: np.random.Generator, mirror: Hits | None = None) -> np.ndarray:
    """RGB uint8 image from per-pixel hits: radiance (+ wet reflections from `mirror`, the hits of
    the camera mirrored in the ground plane) + sensor noise."""
    h, w = hits.t.shape
    rgb = _radiance(world, hits, prims)
    if mirror is not None:
        rgb = _wet(world, hits, mirror, prims, rgb)
    oy, ox = rng.integers(0, 64, 2)
    img = rgb.reshape(h, w, 3)
    img += _grain(h, w)[oy:oy + h, ox:ox + w]
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


@functools.lru_cache(maxsize=12)
def pinhole_grid(name: str, size: tuple[int, int]) -> PinholeGrid:
    """The (cached) ray grid of rig camera `name` at image `size`."""
    spec = next(c for c in RIG if c.name == name)
    return PinholeGrid(intrinsic(spec, size), size)


def render(world: World, spec: CameraSpec, grid: PinholeGrid, t: float, rng: np.random.Generator,
           ) -> tuple[np.ndarray, Hits]:
    """Render camera `spec` at time t: (RGB uint8 (H, W, 3), per-pixel hits in the scene frame)."""
    prims = world.prims_at(t)
    pose = world.ego_pose(t) @ cam_to_ego(spec)
    hits = cast(grid, pose, prims, FAR, count_seen=True)
    mirror = cast(grid, MIRROR_Z @ pose, prims, FAR) if world.wet else None  # what wet pavement reflects
    return shade(world, hits, prims, rng, mirror), hits
