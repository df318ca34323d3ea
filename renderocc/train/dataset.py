"""Training samples read straight from the ray store: images, intrinsics, poses and label rays.

Rays live in the LiDAR-keyframe ego frame (the grid frame): origin = camera centre from
cam2ego, direction = R·K_orig⁻¹[u, v, 1] normalised, target = z·‖K_orig⁻¹[u, v, 1]‖, i.e. the
metric distance along the ray that the renderer returns. Auxiliary rays come from the ±K
adjacent keyframes via the stored neighbour-camera→key-ego transforms; their `dynamic` labels
are dropped (unless `data.use_motion_masks = false`, an ablation) and missing neighbours simply
contribute nothing. With `data.mask_ray_share` > 0 that share of the rays comes from the store's
dense 2D masks instead (renderocc/train/mask_rays.py): class only, `dist` NaN. With BEV augmentation on
(`data.bev_*`, training only) one transform B of the grid frame moves cam2ego, every ray and the 3D
target together (renderocc/train/bev_aug.py), before the rays are filtered against the grid.

All randomness of an item comes from `(seed, epoch, index)`, so workers, resume and DDP see
the same sample whatever process draws it — that is what makes `--resume` exact.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, Sampler

from renderocc.classes import IGNORE
from renderocc.config import Config
from renderocc.errors import UserError
from renderocc.geometry import Grid, ends_inside, label_rays
from renderocc.model import OccupancyNet
from renderocc.seeding import mix_seed
from renderocc.train.bev_aug import BevAug, draw_bev_aug
from renderocc.train.losses import needed_batch_keys
from renderocc.train.mask_rays import (
    MaskCache,
    MaskPool,
    build_mask_pool,
    crosses_grid,
    mask_classes_at,
    mask_ray_count,
)
from renderocc.train.targets import dense_target, label_voxel_target, lss_depth_target, sparse_target

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
LABEL_VOXEL_CACHE = 64  # samples whose label-voxel target a dataset keeps (≤ 41 MB on the Occ3D grid)


def weighted_sample(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices without replacement, P ∝ weight (Efraimidis–Spirakis keys, O(n))."""
    if k >= len(weights):
        return np.arange(len(weights))
    keys = np.log(rng.random(len(weights))) / np.maximum(weights, 1e-12)
    return np.argpartition(-keys, k)[:k]


def augment_matrix(stored_wh: tuple[int, int], input_wh: tuple[int, int], scale_range, flip: bool,
                   rng: np.random.Generator | None) -> tuple[np.ndarray, tuple, tuple, bool]:
    """Pixel affine A (new = A·old), resized size, crop offset and flip of one augmentation.

    Pixel centres sit at integer coordinates; resizing with align_corners=False maps
    u → (u + 0.5)·s − 0.5, so K_new = A·K keeps projection exact. rng=None: no randomness.
    """
    (W, H), (w, h) = stored_wh, input_wh
    base = max(w / W, h / H)  # fill the input, crop the excess
    s = base * (rng.uniform(*scale_range) if rng is not None else 1.0)
    rw, rh = max(w, round(W * s)), max(h, round(H * s))
    sx, sy = rw / W, rh / H
    x0 = int(rng.integers(0, rw - w + 1)) if rng is not None else (rw - w) // 2
    y0 = rh - h if rng is None else int(rng.integers(max(0, (rh - h) // 2), rh - h + 1))  # keep the bottom
    do_flip = bool(flip and rng is not None and rng.random() < 0.5)
    A = np.array([[sx, 0, 0.5 * sx - 0.5 - x0], [0, sy, 0.5 * sy - 0.5 - y0], [0, 0, 1]], np.float64)
    if do_flip:
        A = np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]], np.float64) @ A
    return A, (rw, rh), (x0, y0), do_flip


class RayDataset(Dataset):
    """Items are `(epoch, sample_index)` pairs (see EpochSampler); returns a dict of tensors."""

    def __init__(self, reader, cfg: Config, indices: list[int] | None = None, train: bool = True,
                 exclude: list[int] | None = None, feature_stride: int | None = None,
                 extra_needs: tuple[str, ...] = ()):
        """`extra_needs`: batch keys to build beside those the active loss terms read (the teacher's
        depth hint on unlabelled frames)."""
        self.reader = reader
        self.exclude = set(exclude or [])  # held-out samples: never used, not even as neighbours
        self.cfg = cfg
        d = cfg.data
        self.train = train
        self.indices = list(range(len(reader))) if indices is None else list(indices)
        self.seed = cfg.seed
        self.input_wh = d.input_size
        self.rays = d.rays
        self.grid = cfg.grid.spec
        # dense 3D targets: pooled onto the model grid, or kept at the labels' grid when the model's
        # values are interpolated to it (Grid.coarsens)
        self.target_grid = self.grid.coarsens(reader.grid).target_grid
        self.sup = cfg.supervision
        self.aux = d.aux_frames
        # ablation switch: false keeps aux labels on moving objects (they smear along the track)
        self.use_motion_masks = d.use_motion_masks
        if self.aux and not reader.has_motion_masks and d.aux_without_motion_masks == "drop":
            self.aux = 0  # no `dynamic` flags: moving objects would smear; say so in the trainer
        # build only the targets an active loss term reads (losses.TERMS declare them)
        self.needs = needed_batch_keys(cfg) | set(extra_needs)
        self.want_depth = "depth_target" in self.needs
        # free_beams term: key-frame LiDAR beams without a return (empty when the store has none)
        self.want_free_beams = "free_valid" in self.needs
        # LSS depth cells are the model's feature cells: its stride, not a second constant here
        self.feature_stride = OccupancyNet.feature_stride if feature_stride is None else feature_stride
        if self.sup in ("3d", "mixed") and not reader.has_occ_gt:
            raise UserError(f"supervision {self.sup!r} needs dense 3D labels, but the store has no occ_gt "
                            "(use 2d or lidar-sparse)")
        if self.sup in ("lidar-sparse",) and not reader.has_semantics:
            raise UserError("supervision 'lidar-sparse' needs semantic labels (lidarseg), the store has none")
        self.mask_rays = mask_ray_count(self.rays, d.mask_ray_share)  # the rest are LiDAR label rays
        wants = f"data.mask_ray_share = {d.mask_ray_share:g}" if d.mask_ray_share > 0 else \
            "data.lidar_classes = 'masks'" if d.lidar_classes == "masks" else None
        if wants and not reader.has_semantic_masks:
            raise UserError(f"{wants} needs dense 2D masks, but the store {reader.root} has none "
                            "(add them: renderocc prep masks --store STORE --masks DIR)")
        if d.mask_ray_share > 0 and self.sup == "3d":
            raise UserError("data.mask_ray_share > 0 needs a contract that renders label rays "
                            "(2d, lidar-sparse or mixed), not '3d'")
        self.masks: MaskCache | None = None  # opened on first use
        self._label_voxel_cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key) -> dict:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, int(epoch), int(i)]) if self.train else None
        r = self.reader
        s = r.sample(i)
        names = r.cameras
        out = {"index": torch.tensor(i)}
        img, K = self._images(i, s, rng)
        out["images"], out["intrinsics"] = img, torch.from_numpy(K).float()
        # BEV augmentation: None when off, in evaluation, or drawn as the identity
        bda = draw_bev_aug(self.cfg.data, self.grid, self.seed, epoch, i) if self.train else None
        c2e = np.stack([np.asarray(s["cameras"][n]["cam2ego"], np.float64) for n in names])
        out["cam2ego"] = torch.from_numpy(c2e if bda is None else bda.poses(c2e)).float()
        K_orig = {c: np.asarray(s["cameras"][n]["K_orig"], np.float64) for c, n in enumerate(names)}
        key_labels = r.labels(i)
        frames = self.label_frames(i, s, key_labels)
        if bda is not None:  # before `ends_in_grid`: the grid filter sees the moved ends
            frames = [(bda.ray_dict(f), w) for f, w in frames]
        key = frames[0][0]
        masks = self.mask_pool(i, s) if self.mask_rays else None
        pool = ends_in_grid(frames, self.grid)
        out.update(draw_label_rays(pool, masks, self.grid, self.rays, self.mask_rays, self.cfg.data.class_balance,
                                   rng, bda))
        if "label_voxels" in self.needs:  # every label ray of the sample, not only the drawn ones
            out["label_voxels"] = torch.from_numpy(self._label_voxels(i, pool, bda))
        if self.want_depth:  # camera-frame z: unchanged by the BEV augmentation
            out["depth_target"] = lss_depth_target(key_labels, K_orig, K, img.shape[-2:], self.feature_stride)
        if "occ_target" in self.needs:
            out["occ_target"] = torch.from_numpy(self._occ_target(i, s, key, bda))
        if self.want_free_beams:
            out.update(self._free_beams(i, rng, bda))
        return out

    def label_frames(self, i: int, s: dict | None = None, key_labels: dict | None = None
                     ) -> list[tuple[dict, float]]:
        """[(rays, sampling weight)]: sample i's key label rays first, then the ±K auxiliary frames'.

        Each `rays` dict holds origins, dirs, dist (metric ray distance) and label (int64). Auxiliary
        labels on moving objects are dropped unless `data.use_motion_masks = false`. `renderocc fit`
        uses this too, so a fit sees exactly the label rays training does.
        """
        r = self.reader
        s = r.sample(i) if s is None else s
        names = r.cameras
        key_labels = r.labels(i) if key_labels is None else key_labels
        K_orig = {c: np.asarray(s["cameras"][n]["K_orig"], np.float64) for c, n in enumerate(names)}
        c2e = {c: np.asarray(s["cameras"][n]["cam2ego"], np.float64) for c, n in enumerate(names)}
        key = label_rays(key_labels, K_orig, c2e)
        key["label"] = self._classes(key_labels, i, K_orig)
        frames = [(key, 1.0)]
        for adj, weight in self.neighbours(s):
            j = int(adj["sample_index"])
            lab = r.labels(j)
            if "dynamic" in lab and self.use_motion_masks:
                lab = {k: v[~lab["dynamic"]] for k, v in lab.items()}
            sj = r.sample(j)
            Kj = {c: np.asarray(sj["cameras"][n]["K_orig"], np.float64) for c, n in enumerate(names)}
            cj = {c: np.asarray(adj["cam2ego"][n], np.float64) for c, n in enumerate(names)}
            aux = label_rays(lab, Kj, cj)
            aux["label"] = self._classes(lab, j, Kj)
            frames.append((aux, weight))
        return frames

    def neighbours(self, s: dict) -> list[tuple[dict, float]]:
        """[(adjacent entry, sampling weight)] of the ±K keyframes that add auxiliary rays."""
        return [(adj, self.cfg.data.aux_weight) for adj in (s.get("adjacent", []) if self.aux else [])
                if abs(int(adj["offset"])) <= self.aux and int(adj["sample_index"]) not in self.exclude]

    def _classes(self, labels: dict, j: int, K_orig: dict[int, np.ndarray]) -> np.ndarray:
        """Sample j's LiDAR label classes (int64) by `data.lidar_classes`: lidarseg, the dense mask
        at each label's pixel, or none (255: depth only)."""
        which = self.cfg.data.lidar_classes
        if which == "lidarseg":
            return labels["label"].astype(np.int64)
        if which == "none":
            return np.full(len(labels["label"]), IGNORE, np.int64)
        self.masks = self.masks or MaskCache(self.reader)
        s = self.reader.sample(j)
        K = {c: np.asarray(s["cameras"][n]["K"], np.float64) for c, n in enumerate(self.reader.cameras)}
        return mask_classes_at(labels, self.masks.semantic(j), K_orig, K)

    def mask_pool(self, i: int, s: dict | None = None) -> MaskPool:
        """Sample i's dense-mask pixels (key frame, then the same neighbours as `label_frames`)."""
        s = self.reader.sample(i) if s is None else s
        self.masks = self.masks or MaskCache(self.reader)
        return build_mask_pool(self.masks, s, self.neighbours(s), self.use_motion_masks)

    def _free_beams(self, i: int, rng, bda: BevAug | None = None) -> dict:
        return draw_free_beams(self.reader.free_beams(i), self.cfg.data.free_beams, rng, bda)

    # -- images ---------------------------------------------------------------------------------
    def _images(self, i: int, s: dict, rng) -> tuple[torch.Tensor, np.ndarray]:
        d = self.cfg.data
        Ks = [s["cameras"][name]["K"] for name in self.reader.cameras]
        return prepare_images(self.reader.images(i), Ks, self.input_wh, d.resize_range, d.flip, rng)

    # -- 3D targets (built by renderocc/train/targets.py) ----------------------------------------
    def _label_voxels(self, i: int, pool: tuple[np.ndarray, ...], bda: BevAug | None) -> np.ndarray:
        """Sample i's `label_voxel_target` (a walk of every label ray: ~0.3 s on a 640k-voxel grid),
        kept for the last `LABEL_VOXEL_CACHE` samples when no BEV augmentation moves the rays."""
        if bda is None and i in self._label_voxel_cache:
            self._label_voxel_cache.move_to_end(i)
            return self._label_voxel_cache[i]
        target = label_voxel_target(pool, self.grid, self.reader.vocabulary.num_semantic)
        if bda is None:
            self._label_voxel_cache[i] = target
            while len(self._label_voxel_cache) > LABEL_VOXEL_CACHE:
                self._label_voxel_cache.popitem(last=False)
        return target

    def _occ_target(self, i: int, s: dict, key: dict, bda: BevAug | None = None) -> np.ndarray:
        """lidar-sparse: from the key LiDAR rays (free space from the sensor when the store gives
        `lidar2ego`); 3d / mixed: the store's GT inside `loss.occ3d_mask` (mask_camera, mask_lidar or
        everywhere), pooled to the model grid (or at the labels' grid for a finer model).

        With BEV augmentation `key` is already moved: the sparse target is voxelised from the moved
        rays and sensor; the dense one is moved by nearest-neighbour resampling (255 outside)."""
        if self.sup == "lidar-sparse":
            sensor = None if s.get("lidar2ego") is None else np.asarray(s["lidar2ego"], np.float64)[:3, 3]
            if sensor is not None and bda is not None:
                sensor = bda.points(sensor)
            return sparse_target(key["origins"], key["directions"], key["ends"], key["label"], self.grid, sensor,
                                 self.reader.vocabulary.num_semantic)
        gt = self.reader.occ_gt(i)
        if gt is None:
            return np.full(self.target_grid.shape, IGNORE, np.uint8)
        sem = np.asarray(gt["semantics"])
        which = self.cfg.loss.occ3d_mask
        mask = np.ones(sem.shape, bool) if which == "none" else np.asarray(gt[f"mask_{which}"])
        target = dense_target(sem, mask, self.target_grid.shape, self.reader.vocabulary.num_semantic)
        return target if bda is None else bda.voxels(target, self.target_grid, IGNORE)


def ends_in_grid(frames: list[tuple[dict, float]], grid: Grid) -> tuple[np.ndarray, ...]:
    """Concatenated (origins, dirs, dist, label, is_key, frame weight) of the rays whose labelled end
    point lies strictly inside the grid box (a label outside it cannot be explained by the grid)."""
    o = np.concatenate([f["origins"] for f, _ in frames])
    dvec = np.concatenate([f["directions"] for f, _ in frames])
    dist = np.concatenate([f["ends"] for f, _ in frames])
    lab = np.concatenate([f["label"] for f, _ in frames])
    is_key = np.concatenate([np.full(len(f["ends"]), k == 0) for k, (f, _) in enumerate(frames)])
    fw = np.concatenate([np.full(len(f["ends"]), w) for f, w in frames])
    ok = ends_inside(o, dvec, dist, grid)
    return o[ok], dvec[ok], dist[ok], lab[ok], is_key[ok], fw[ok]


def draw_label_rays(pool: tuple[np.ndarray, ...], masks: MaskPool | None, grid: Grid, R: int, n_mask: int,
                    class_balance: float, rng, bda: BevAug | None = None) -> dict[str, torch.Tensor]:
    """R rays of an item: R − n_mask LiDAR label rays from `pool` (`ends_in_grid`), then n_mask
    dense-mask rays from `masks` (dist NaN), moved by `bda` when given (the pool's rays already are).
    Training and `renderocc fit` both draw with this."""
    rays = draw_from_pool(pool, R - n_mask, class_balance, rng)
    if not n_mask:
        return rays
    extra = draw_mask_rays(masks, grid, n_mask, class_balance, rng, bda)
    return {k: torch.cat([rays[k], extra[k]]) for k in rays}


def draw_from_pool(pool: tuple[np.ndarray, ...], R: int, class_balance: float, rng) -> dict[str, torch.Tensor]:
    """R rays of an `ends_in_grid` pool by weight (pad + mask). Weight = frame weight ×
    count(class)^-class_balance; rng=None (evaluation) takes key rays first, deterministically.
    `renderocc fit` builds the pool once and draws from it every iteration, exactly like training."""
    o, dvec, dist, lab, is_key, fw = pool
    w = fw * balance_weights(lab, class_balance)
    if rng is None:  # evaluation: deterministic key rays first
        pick = np.argsort(~is_key, kind="stable")[:R]
    else:
        pick = weighted_sample(w, R, rng)
    return padded_rays(R, o[pick], dvec[pick], dist[pick], lab[pick], is_key[pick])


def balance_weights(label: np.ndarray, class_balance: float) -> np.ndarray:
    """Per-ray sampling weight count(class)^-class_balance within one pool (255 counts as a class)."""
    counts = np.bincount(label, minlength=IGNORE + 1).astype(np.float64)
    return (np.maximum(counts, 1.0) ** -class_balance)[label]


def padded_rays(R: int, o, dvec, dist, lab, is_key) -> dict[str, torch.Tensor]:
    """The n ≤ R given rays as R rows: padding rows are invalid (`valid` false), dist 1, label 255."""
    n = len(dist)
    res = {"origins": np.zeros((R, 3), np.float32), "directions": np.tile(np.float32([1, 0, 0]), (R, 1)),
           "ends": np.ones(R, np.float32), "label": np.full(R, IGNORE, np.int64),
           "is_key": np.zeros(R, bool), "valid": np.zeros(R, bool)}
    res["origins"][:n], res["directions"][:n], res["ends"][:n] = o, dvec, dist
    res["label"][:n], res["is_key"][:n], res["valid"][:n] = lab, is_key, True
    return {k: torch.from_numpy(v) for k, v in res.items()}


def draw_mask_rays(pool: MaskPool, grid: Grid, R: int, class_balance: float, rng, bda: BevAug | None = None
                   ) -> dict[str, torch.Tensor]:
    """R dense-mask rays (padded like `draw_from_pool`) with `dist` NaN: no depth. Weight = frame
    weight × count(class)^-class_balance; rng=None takes evenly spaced key-frame pixels. Drawn rays
    are moved by `bda` (BEV augmentation) when given; those that then miss the grid box are dropped
    (padding), not redrawn."""
    if rng is None:
        n_key = int(pool.is_key.sum())
        pick = np.unique(np.linspace(0, n_key - 1, min(R, n_key)).round().astype(np.int64)) if n_key else \
            np.zeros(0, np.int64)
    else:
        pick = weighted_sample(pool.weight * balance_weights(pool.label, class_balance), R, rng)
    o, d = pool.rays(pick)
    if bda is not None:
        o, d, _ = bda.rays(o, d)
    ok = crosses_grid(o, d, grid)
    pick = pick[ok]
    return padded_rays(R, o[ok], d[ok], np.full(len(pick), np.nan), pool.label[pick], pool.is_key[pick])


def holdout_split(reader, spec: str) -> tuple[list[int], list[int]]:
    """(train, held-out) sample indices of the training store, for the occupancy threshold.

    `auto`: the last scene when there are ≥ 4 scenes, else every 8th sample; `last-scene`;
    `every-k:N`; `none` (no held-out; the threshold then uses training samples — said in the log).
    """
    n = len(reader)
    idx = list(range(n))
    if spec == "none" or n < 2:
        return idx, []
    scenes = [reader.sample(i)["scene_name"] for i in idx] if spec in ("auto", "last-scene") else []
    names = list(dict.fromkeys(scenes))
    if spec == "last-scene" or (spec == "auto" and len(names) >= 4):
        held = [i for i in idx if scenes[i] == names[-1]]
    elif spec == "auto" or spec.startswith("every-k"):
        k = int(spec.split(":")[1]) if ":" in spec else 8
        held = idx[k - 1::k] or idx[-1:]
    else:
        raise UserError(f"data.holdout {spec!r}: use auto, last-scene, every-k:N or none")
    held_set = set(held)
    return [i for i in idx if i not in held_set], held


class EpochSampler(Sampler):
    """Yields `(epoch, index)` in a seeded per-epoch permutation, sharded for DDP, resumable.

    Global step g uses positions [g·B, (g+1)·B) of the infinite stream of permutations (B =
    global batch); rank r takes every world-th item of each global batch, so 1 process with
    batch B and W processes with batch B/W see exactly the same samples.
    """

    def __init__(self, indices: list[int], batch_per_rank: int, seed: int, rank: int = 0, world: int = 1,
                 start_step: int = 0):
        self.indices, self.b, self.seed = list(indices), batch_per_rank, seed
        self.rank, self.world, self.start = rank, world, start_step

    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return [self.indices[j] for j in torch.randperm(len(self.indices), generator=g).tolist()]

    def __iter__(self):
        gb = self.b * self.world
        pos = self.start * gb
        n = len(self.indices)
        cached = (-1, [])
        while True:
            epoch, off = divmod(pos, n)
            if cached[0] != epoch:
                cached = (epoch, self._perm(epoch))
            perm = cached[1]
            k = pos - pos // gb * gb  # position inside the global batch
            if k % self.world == self.rank:
                yield (epoch, perm[off])
            pos += 1

    def __len__(self) -> int:  # infinite stream; the trainer stops at max_steps
        return 2**62


def prepare_images(raw: np.ndarray, Ks: list[np.ndarray], input_wh: tuple[int, int], resize_range,
                   flip: bool, rng) -> tuple[torch.Tensor, np.ndarray]:
    """Stored uint8 (N, H, W, 3) images → normalised (N, 3, h, w) network input and the matching
    intrinsics. One function for training (augmented) and inference (`rng=None`, no resize range,
    no flip), so eval/predict feed the network exactly what training did."""
    W, H = raw.shape[2], raw.shape[1]
    w, h = input_wh
    x = torch.from_numpy(np.ascontiguousarray(raw)).permute(0, 3, 1, 2).float()
    out_K, imgs = [], []
    for c, K in enumerate(Ks):
        A, (rw, rh), (x0, y0), flipped = augment_matrix((W, H), (w, h), resize_range, flip, rng)
        im = F.interpolate(x[c:c + 1], size=(rh, rw), mode="bilinear", align_corners=False,
                           antialias=rw < W)[0, :, y0:y0 + h, x0:x0 + w]
        imgs.append(im.flip(-1) if flipped else im)
        out_K.append(A @ np.asarray(K, np.float64))
    img = torch.stack(imgs)
    img = (img - torch.from_numpy(MEAN)[:, None, None]) / torch.from_numpy(STD)[:, None, None]
    return img.contiguous(), np.stack(out_K)


def draw_free_beams(beams: dict | None, count: int, rng: np.random.Generator | None, bda: BevAug | None = None
                    ) -> dict[str, torch.Tensor]:
    """`count` of a key frame's no-return beams (uniform draw; rng=None: evenly spaced), padded like
    the label rays: free_origins, free_directions (count, 3), free_valid (count,), moved by `bda` (BEV
    augmentation) when given. `renderocc fit` draws with it too."""
    m = 0 if beams is None else len(beams["ring"])
    if m <= count:
        pick = np.arange(m)
    elif rng is None:
        pick = np.linspace(0, m - 1, count).round().astype(np.int64)
    else:
        pick = np.sort(rng.choice(m, count, replace=False))
    n = len(pick)
    res = {"free_origins": np.zeros((count, 3), np.float32),
           "free_directions": np.tile(np.float32([1, 0, 0]), (count, 1)), "free_valid": np.zeros(count, bool)}
    if n:
        o, d = beams["origin"][pick], beams["direction"][pick]
        if bda is not None:
            o, d, _ = bda.rays(o, d)
        res["free_origins"][:n], res["free_directions"][:n] = o, d
        res["free_valid"][:n] = True
    return {k: torch.from_numpy(v) for k, v in res.items()}
