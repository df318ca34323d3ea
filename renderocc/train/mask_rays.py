"""Semantic rays from dense 2D masks (`renderocc prep masks`): a class per pixel, no depth.

A mask pixel says which class the camera sees along its ray but not how far away it is, so a mask
ray trains the rendered semantics only: its `dist` is NaN and every depth-using loss skips it
(renderocc/train/losses.py). The pool holds every labelled pixel (255 = unlabelled is skipped) of
the key frame's masks and, when auxiliary frames are on, of the ±K neighbours' masks, with the
neighbours' moving-object pixels dropped exactly as their LiDAR labels are (`dynamic` there, the
dense motion mask here). Pixel rays follow renderocc/geometry/rays.py at the stored image size: the
masks are stored at that size and `K` is the stored-size intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from renderocc.classes import IGNORE
from renderocc.geometry import Grid, pixel_rays
from renderocc.geometry.sampling import clip_to_box


@dataclass
class MaskPool:
    """Every usable mask pixel of one training item, key frame first. Rays are built only for the
    pixels drawn (a pool holds ~10⁶ pixels; an item draws a few thousand)."""

    frame: np.ndarray  # int16 (P,): index into `Ks` / `cam2ego`
    camera: np.ndarray  # int16 (P,)
    u: np.ndarray  # int32 (P,) stored-size pixel column
    v: np.ndarray  # int32 (P,) stored-size pixel row
    label: np.ndarray  # int64 (P,) class, never 255
    weight: np.ndarray  # float64 (P,) the frame's sampling weight (key 1, aux data.aux_weight)
    Ks: list[np.ndarray]  # per frame (n_cams, 3, 3) stored-size intrinsics
    cam2ego: list[np.ndarray]  # per frame (n_cams, 4, 4) camera → key-ego

    @property
    def is_key(self) -> np.ndarray:
        return self.frame == 0

    def rays(self, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(origins, unit dirs) (n, 3) float64 in the key-ego frame of the picked pixels."""
        o, d = np.zeros((len(pick), 3)), np.zeros((len(pick), 3))
        key = self.frame[pick].astype(np.int64) * 1000 + self.camera[pick]
        for k in np.unique(key):
            m = key == k
            f, c = divmod(int(k), 1000)
            sel = pick[m]
            o[m], d[m], _ = pixel_rays(self.u[sel], self.v[sel], self.Ks[f][c], self.cam2ego[f][c])
        return o, d


def mask_pixels(mask: np.ndarray, moving: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """(camera, v, u, label) of the labelled pixels of a (n_cams, H, W) mask, minus `moving` ones."""
    keep = mask != IGNORE
    if moving is not None:
        keep &= ~moving
    c, v, u = np.nonzero(keep)
    return c.astype(np.int16), v.astype(np.int32), u.astype(np.int32), mask[c, v, u].astype(np.int64)


class MaskCache:
    """A store's semantic and motion masks by sample, kept after the first read up to `max_bytes`:
    an item reads its ±K neighbours' masks too, so each mask is read about 2K + 1 times an epoch."""

    def __init__(self, reader, max_bytes: int = 256 << 20):
        self.reader, self.max_bytes, self.used = reader, max_bytes, 0
        self._kept: dict[tuple[str, int], np.ndarray | None] = {}

    def _get(self, kind: str, i: int) -> np.ndarray | None:
        if (kind, i) in self._kept:
            return self._kept[(kind, i)]
        m = self.reader.semantic_mask(i) if kind == "semantic" else self.reader.motion_mask(i)
        size = 0 if m is None else m.nbytes
        if self.used + size <= self.max_bytes:
            self._kept[(kind, i)], self.used = m, self.used + size
        return m

    def semantic(self, i: int) -> np.ndarray:
        m = self._get("semantic", i)
        if m is None:
            raise ValueError(f"sample {i} has no semantic mask")
        return m

    def moving(self, i: int) -> np.ndarray | None:
        return self._get("motion", i)


def build_mask_pool(masks: MaskCache, s: dict, neighbours: list[tuple[dict, float]], use_motion_masks: bool
                    ) -> MaskPool:
    """The pool of sample `s` (reader.sample(i)) and its `neighbours` [(adjacent entry, weight)].

    A neighbour's pixels on moving objects are dropped when `use_motion_masks` and the store has
    motion masks (the dataset turns aux frames off when it has none, as for LiDAR labels)."""
    reader = masks.reader
    names = reader.cameras
    parts, Ks, c2e = [], [], []
    frames = [(s, {n: s["cameras"][n]["cam2ego"] for n in names}, 1.0, None)]
    for adj, w in neighbours:
        j = int(adj["sample_index"])
        moving = masks.moving(j) if use_motion_masks else None
        frames.append((reader.sample(j), adj["cam2ego"], w, moving))
    for f, (sf, poses, w, moving) in enumerate(frames):
        mask = masks.semantic(int(sf["sample_index"]))
        cam, v, u, lab = mask_pixels(mask, moving)
        parts.append((np.full(len(cam), f, np.int16), cam, u, v, lab, np.full(len(cam), w)))
        Ks.append(np.stack([np.asarray(sf["cameras"][n]["K"], np.float64) for n in names]))
        c2e.append(np.stack([np.asarray(poses[n], np.float64) for n in names]))
    cols = [np.concatenate(x) for x in zip(*parts, strict=True)]
    return MaskPool(*cols, Ks=Ks, cam2ego=c2e)


def mask_classes_at(labels: dict, mask: np.ndarray, K_orig: dict[int, np.ndarray], K: dict[int, np.ndarray]
                    ) -> np.ndarray:
    """int64 class of the stored (n_cams, H, W) `mask` at each LiDAR label's pixel (its original-image
    u, v mapped by K·K_orig⁻¹ to the nearest stored pixel; 255 outside the image or unlabelled)."""
    cam = np.asarray(labels["camera"]).astype(np.int64)
    out = np.full(len(cam), IGNORE, np.int64)
    H, W = mask.shape[1:]
    for c in np.unique(cam):
        m = np.flatnonzero(cam == c)
        A = np.asarray(K[int(c)], np.float64) @ np.linalg.inv(np.asarray(K_orig[int(c)], np.float64))
        uv = np.stack([labels["u"][m], labels["v"][m], np.ones(len(m))], -1) @ A.T
        u, v = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
        ok = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        out[m[ok]] = mask[c, v[ok], u[ok]]
    return out


def crosses_grid(origins: np.ndarray, directions: np.ndarray, grid: Grid) -> np.ndarray:
    """Rays with a part inside the grid box: the only ones whose semantics the grid can render."""
    t0, t1 = clip_to_box(origins, directions, grid.lo, grid.hi)
    return t1 > t0


def mask_ray_count(rays: int, share: float) -> int:
    """How many of an item's `rays` come from the masks (the rest are LiDAR label rays)."""
    return int(round(rays * share))
