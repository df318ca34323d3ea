"""Fit a free voxel grid to one keyframe's labels with training's renderer, losses and rays.

Per sample: the key label rays plus the ±K auxiliary frames' (dynamic aux labels dropped unless
`data.use_motion_masks = false`), exactly as `RayDataset` builds them; `data.rays` of them drawn
per iteration with training's weights; the active loss terms of `cfg` (`compute_loss`), Adam on
the raw per-voxel parameters (a free voxel needs a far larger step than a network weight), cosine
decay to 5 % of the rate. `supervision = "3d"` fits the `occ3d` term to the store's dense GT
inside mask_camera instead: a check of the fit itself, which must reach ≈1.0 there.

The threshold follows training's rule on the one sample there is (a fit has no held-out part):
`2d` — the label-free 2D depth agreement of the first crossing on the sample's key rays; `3d` —
geometry IoU against the sample's dense target inside mask_camera.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from tqdm import tqdm

from renderocc.classes import IGNORE, NUM_SEMANTIC
from renderocc.config import Config, resolved, semantic_source
from renderocc.errors import UserError
from renderocc.eval.common import clean_json
from renderocc.eval.infer import classify
from renderocc.eval.metrics import OccMetrics
from renderocc.fit import convergence
from renderocc.fit.grid_model import FreeGrid
from renderocc.fit.voxelize import voxelize_frames
from renderocc.geometry import Grid
from renderocc.ops import first_hits
from renderocc.outputs import sample_dirs, savez_atomic, share, write_atomic
from renderocc.seeding import mix_seed
from renderocc.train.class_weights import class_weights
from renderocc.train.dataset import (
    RayDataset,
    balance_weights,
    draw_free_beams,
    draw_mask_rays,
    ends_in_grid,
    padded_rays,
)
from renderocc.train.losses import active_terms, needed_batch_keys
from renderocc.train.mask_rays import MaskPool, mask_ray_count
from renderocc.train.step import compute_loss
from renderocc.train.targets import dense_target, label_voxel_target
from renderocc.train.threshold import LABEL_VOXEL_METRIC, candidate_counts, pick_threshold, uses_label_voxels

FIT_SOURCE = "the fitted sample itself (a fit has no held-out sample)"
KEYS = {
    "semantics": "uint8 [x, y, z] Occ3D class (0-16), 17 = free: argmax class where density > threshold",
    "density": "float16 fitted volume density σ (1/m)",
}


@dataclass
class FitResult:
    """One fitted sample: the grid, its class grid at the chosen threshold, and the fit's trace."""

    density: torch.Tensor  # (X, Y, Z) float32, cpu
    logits: torch.Tensor  # (X, Y, Z, 17) float32, cpu
    semantics: np.ndarray  # uint8 (X, Y, Z), free = 17
    threshold: dict
    loss_first: float
    loss_last: float
    rays: int  # label rays in the pool the fit drew from
    seconds: float
    trace: list[dict] = field(default_factory=list)  # per `trace_points` iteration: loss, scores, threshold

    @property
    def plateau(self) -> int | None:
        """The first traced iteration whose geometry IoU is within `PLATEAU_TOLERANCE` of the last one."""
        scored = [t for t in self.trace if t.get("geometry_iou") is not None]
        if not scored:
            return None
        last = scored[-1]["geometry_iou"]
        return next(t["iter"] for t in scored if t["geometry_iou"] >= last - PLATEAU_TOLERANCE)


PLATEAU_TOLERANCE = 0.01  # geometry IoU: a fit within one point of where it ends has converged
TRACE_THRESHOLD_RAYS = 8192  # key rays a trace point picks its threshold on (the final pick: all of them)


class EpochDraw:
    """The label rays of a fit in epochs: each epoch is one weighted random permutation of the whole
    pool (training's weights: frame weight × class balance; Efraimidis–Spirakis keys), cut into
    batches, so every label ray is used once per epoch and rare classes come early in it."""

    def __init__(self, pool: tuple[np.ndarray, ...], per_iter: int, class_balance: float, rng: np.random.Generator):
        self.pool, self.per_iter, self.rng = pool, per_iter, rng
        self.weights = pool[5] * balance_weights(pool[3], class_balance)
        self.order = np.zeros(0, np.int64)
        self.epoch = 0

    @property
    def size(self) -> int:
        return len(self.weights)

    def next(self) -> dict[str, torch.Tensor]:
        """The next `per_iter` rays (padded like training's draw), starting a new epoch when one ends."""
        if len(self.order) == 0:
            keys = np.log(self.rng.random(self.size)) / np.maximum(self.weights, 1e-12)
            self.order = np.argsort(-keys, kind="stable")
            self.epoch += 1
        pick, self.order = self.order[:self.per_iter], self.order[self.per_iter:]
        o, d, dist, lab, is_key, _ = self.pool
        return padded_rays(self.per_iter, o[pick], d[pick], dist[pick], lab[pick], is_key[pick])


def trace_points(iters: int) -> list[int]:
    """Iterations a fit is scored at: 1, 2, 5, 10, 20, 50, … (log-spaced) and the last."""
    points, k = [], 0
    while True:
        it = (1, 2, 5)[k % 3] * 10 ** (k // 3)
        if it >= iters:
            break
        points.append(it)
        k += 1
    return [*points, iters]


def fit_volume(frames: list[tuple[dict, float]], cfg: Config, *, iters: int, lr: float,
               class_weights: torch.Tensor | None = None, occ_target: np.ndarray | None = None,
               device: str | torch.device = "cpu", seed: int = 0, free_beams: dict | None = None,
               num_classes: int = NUM_SEMANTIC, masks: MaskPool | None = None,
               on_trace: Callable[[int, FreeGrid], None] | None = None,
               label_voxels: np.ndarray | None = None) -> tuple[FreeGrid, list[float]]:
    """Optimise a `FreeGrid` on the resolved grid of `cfg` against `frames` (2D contracts: every
    label ray once per epoch, `EpochDraw`) or `occ_target` (`3d`), with the key frame's no-return
    `free_beams` when their term is active and `data.mask_ray_share` of the rays from the dense-mask
    pixels `masks`. `on_trace(iteration, grid)` is called at `trace_points(iters)`; `label_voxels`:
    the frames' `label_voxel_target` when the caller already has it.
    Returns the grid and the loss per iteration."""
    device = torch.device(device)
    grid = cfg.grid.spec
    if cfg.loss.lss_depth > 0:
        raise ValueError("a free grid has no LSS depth head: set loss.lss_depth = 0")
    if not active_terms(cfg):
        raise UserError(f"no active loss term under supervision {cfg.supervision!r} (all weights 0?)")
    model = FreeGrid(grid.shape, cfg.model.density_init, num_classes).to(device)
    try:  # fused: one pass over the 11M parameters of a full Occ3D grid instead of ten
        opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, iters)))))
    rng = np.random.default_rng(seed)
    dummy = torch.zeros(1, 0)
    base = {"images": dummy, "intrinsics": dummy, "cam2ego": dummy}
    if occ_target is not None:
        base["occ_target"] = torch.from_numpy(np.asarray(occ_target, np.uint8))[None]
    rendered = cfg.supervision != "3d"
    beams = "free_valid" in needed_batch_keys(cfg)
    pool = ends_in_grid(frames, grid) if rendered else None  # concatenated once, drawn from every iteration
    if rendered and "label_voxels" in needed_batch_keys(cfg):
        if label_voxels is None:
            label_voxels = label_voxel_target(pool, grid, num_classes)
        base["label_voxels"] = torch.from_numpy(label_voxels)[None]
    n_mask = mask_ray_count(cfg.data.rays, cfg.data.mask_ray_share) if masks is not None else 0
    draw = EpochDraw(pool, cfg.data.rays - n_mask, cfg.data.class_balance, rng) if rendered else None
    traced = set(trace_points(iters)) if on_trace is not None else set()
    losses = []
    for it in range(1, iters + 1):
        batch = dict(base)
        if rendered:
            rays = draw.next()
            if n_mask:
                extra = draw_mask_rays(masks, grid, n_mask, cfg.data.class_balance, rng)
                rays = {k: torch.cat([rays[k], extra[k]]) for k in rays}
            batch.update({k: v[None] for k, v in rays.items()})
        if beams:
            batch.update({k: v[None] for k, v in draw_free_beams(free_beams, cfg.data.free_beams, rng).items()})
        loss, _, _ = compute_loss(model, batch, cfg, class_weights, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if it in traced:
            on_trace(it, model)
    return model, losses


def fit_threshold(density: torch.Tensor, cfg: Config, frames: list[tuple[dict, float]] | None = None,
                  occ_target: np.ndarray | None = None, index: int = 0, free: int = NUM_SEMANTIC,
                  max_rays: int | None = None, label_voxels: np.ndarray | None = None) -> dict:
    """Training's threshold rule on the fitted sample: 3D IoU against `occ_target` (`3d`), against
    the frames' label voxels (`loss.label_voxels` > 0; `label_voxels` when the caller has them), or
    the 2D depth agreement of the first crossing along every key ray ending in the grid (`2d`; with
    `max_rays`, along that many evenly spaced ones: the convergence trace's cheaper pick)."""
    if cfg.supervision in ("3d", "mixed") and occ_target is not None:
        num, den = candidate_counts(density, cfg, occ_target=torch.from_numpy(np.asarray(occ_target)), free=free)
        return pick_threshold(num, den, True, [index], FIT_SOURCE)
    if uses_label_voxels(cfg):  # training's rule for a run that reads its labels voxel by voxel
        if label_voxels is None:
            label_voxels = label_voxel_target(ends_in_grid(frames, cfg.grid.spec), cfg.grid.spec, free)
        num, den = candidate_counts(density, cfg, occ_target=torch.from_numpy(label_voxels), free=free)
        return pick_threshold(num, den, False, [index], FIT_SOURCE, LABEL_VOXEL_METRIC)
    o, d, dist, *_ = ends_in_grid(frames[:1], cfg.grid.spec)
    if max_rays is not None and len(dist) > max_rays:
        pick = np.linspace(0, len(dist) - 1, max_rays).round().astype(np.int64)
        o, d, dist = o[pick], d[pick], dist[pick]
    rays = tuple(torch.from_numpy(np.ascontiguousarray(a)).float() for a in (o, d, dist))
    num, den = candidate_counts(density, cfg, rays=rays)
    return pick_threshold(num, den, False, [index], FIT_SOURCE)


def fit_frames(frames: list[tuple[dict, float]], cfg: Config, *, iters: int, lr: float,
               class_weights: torch.Tensor | None = None, occ_target: np.ndarray | None = None,
               device: str | torch.device = "cpu", seed: int = 0, index: int = 0,
               free_beams: dict | None = None, num_classes: int = NUM_SEMANTIC,
               masks: MaskPool | None = None, score: Callable[[np.ndarray], dict] | None = None) -> FitResult:
    """The reader-free core: fit, choose the threshold, classify. `cfg` must be resolved. With
    `score` (fit-grid classes → {"miou", "geometry_iou"}) the fit is scored at `trace_points` as it
    goes, each time at the threshold training's rule picks then: how many iterations it needs."""
    t0 = time.time()
    pool = ends_in_grid(frames, cfg.grid.spec) if frames and cfg.supervision != "3d" else None
    n_rays = len(pool[2]) if pool is not None else 0
    voxels = label_voxel_target(pool, cfg.grid.spec, num_classes) if pool is not None and uses_label_voxels(cfg) \
        else None  # built once: the loss, every trace point and the final threshold read it
    trace: list[dict] = []

    def on_trace(it: int, model: FreeGrid) -> None:
        with torch.no_grad():
            density, logits = model.density.detach().float().cpu(), model.logits.detach().float().cpu()
        thr = fit_threshold(density, cfg, frames, occ_target, index, free=num_classes, max_rays=TRACE_THRESHOLD_RAYS,
                            label_voxels=voxels)
        m = score(classify(density, logits, thr["threshold"]))
        trace.append({"iter": it, "epoch": it * cfg.data.rays / n_rays if n_rays else None,
                      "miou": m["miou"], "geometry_iou": m["geometry_iou"], "threshold": thr["threshold"]})

    model, losses = fit_volume(frames, cfg, iters=iters, lr=lr, class_weights=class_weights,
                               occ_target=occ_target, device=device, seed=seed, free_beams=free_beams,
                               num_classes=num_classes, masks=masks, on_trace=on_trace if score else None,
                               label_voxels=voxels)
    previous = 0
    for t in trace:  # the mean training loss over the iterations since the previous point
        t["loss"] = float(np.mean(losses[previous:t["iter"]]))
        previous = t["iter"]
    with torch.no_grad():
        density = model.density.detach().float().cpu()
        logits = model.logits.detach().float().cpu()
    thr = fit_threshold(density, cfg, frames, occ_target, index, free=num_classes, label_voxels=voxels)
    return FitResult(density, logits, classify(density, logits, thr["threshold"]), thr,
                     losses[0] if losses else float("nan"), losses[-1] if losses else float("nan"),
                     n_rays, time.time() - t0, trace)


# -- label coverage ------------------------------------------------------------------------------
def endpoint_grid(frames: list[tuple[dict, float]], grid: Grid) -> np.ndarray:
    """bool (X, Y, Z): voxels holding the end point of a label ray the fit draws from."""
    o, d, dist, *_ = ends_in_grid(frames, grid)
    ijk, inside = grid.index(o + d * dist[:, None])
    out = np.zeros(grid.shape, bool)
    ijk = ijk[inside]
    out[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    return out


def dilate26(mask: np.ndarray) -> np.ndarray:
    """A voxel or any of its 26 neighbours is set (3×3×3 binary dilation, grid edges not wrapped)."""
    return binary_dilation(mask, structure=np.ones((3, 3, 3), bool))


def coverage_counts(ends: np.ndarray, gt: np.ndarray, mask_camera: np.ndarray, num_classes: int = NUM_SEMANTIC
                    ) -> np.ndarray:
    """(2, 17) int64: per class, GT-occupied mask_camera voxels [covered, total]; covered = the voxel
    holds or 26-borders a label-ray end point (`ends`, at the GT's grid)."""
    gt = np.asarray(gt).astype(np.int64)
    occ = np.asarray(mask_camera, bool) & (gt < num_classes)
    near = dilate26(ends)
    total = np.bincount(gt[occ], minlength=num_classes)[:num_classes]
    cov = np.bincount(gt[occ & near], minlength=num_classes)[:num_classes]
    return np.stack([cov, total])


def semantic_coverage_counts(frames: list[tuple[dict, float]], masks: MaskPool | None, gt: np.ndarray,
                             mask_camera: np.ndarray, grid: Grid, num_classes: int = NUM_SEMANTIC) -> np.ndarray:
    """(2, C) int64: per class, GT-occupied mask_camera voxels [named, total]; named = the voxel holds
    or 26-borders a semantic label of ITS OWN class: a classed label ray's end point, or the first
    GT-occupied voxel along a key-frame mask ray (the surface its pixel sees). A diagnostic against
    the truth, like label coverage: which voxels' classes the labels state, and correctly."""
    gt = np.asarray(gt).astype(np.int64)
    solid = gt < num_classes
    named = np.zeros((num_classes, *gt.shape), bool)
    o, d, dist, lab, *_ = ends_in_grid(frames, grid)
    ijk, inside = grid.index(o + d * dist[:, None])
    ok = inside & (lab < num_classes)
    named[lab[ok], ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]] = True
    if masks is not None and masks.is_key.any():
        pick = np.flatnonzero(masks.is_key)
        o, d = masks.rays(pick)
        vox, _, hit = first_hits(solid[None], o, d, grid)
        hit = hit[0] & (vox[0] >= 0)
        lab = masks.label[pick][hit]
        keep = lab < num_classes
        named.reshape(num_classes, -1)[lab[keep], vox[0][hit][keep]] = True
    occ = np.asarray(mask_camera, bool) & solid
    cov = np.array([(dilate26(named[c]) & occ & (gt == c)).sum() for c in range(num_classes)], np.int64)
    return np.stack([cov, np.bincount(gt[occ], minlength=num_classes)[:num_classes]])


# -- the command's body --------------------------------------------------------------------------
def git_commit() -> str | None:
    """HEAD of the checkout this code runs from, if it is one (results files record it)."""
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def fit_config(cfg: Config, store_grid: Grid, *, keep_grid: bool = False) -> Config:
    """`cfg` resolved on the store's grid (unless the user set grid.* themselves), lss_depth off.

    A fitted grid is scored voxel for voxel or pooled: a grid finer than the labels (interpolated
    to them by a network's training and eval) has no fit counterpart and is refused in one line."""
    if not keep_grid:
        rec = store_grid.to_record()
        cfg = cfg.replace(grid={"pc_range": rec["pc_range"], "voxel_size": rec["voxel_size"], "shape": None})
    cfg = resolved(cfg.replace(loss={"lss_depth": 0.0}), store_grid)
    if cfg.grid.spec.coarsens(store_grid).mode == "interpolate":
        raise UserError(f"fit: grid {cfg.grid.spec.text()} is finer than the store's {store_grid.text()}: fit "
                        "runs on the store's grid or a coarser one that pools it")
    return cfg


METHODS = ("both", "optimise", "voxelize")


def fit_store(reader, indices: list[int], cfg: Config, *, iters: int, lr: float, out: str | Path | None,
              device: str = "cpu", progress: bool = True, method: str = "both") -> dict:
    """Fit every sample in `indices`; write OUT/<scene>/<token>/labels.npz (if `out`); return the
    metrics dict (eval's Occ3D keys, label coverage, thresholds, run metadata). `method`: the
    optimised fit, the voxelisation baseline (`fit.voxelize`), or both scored side by side (the
    headline is then the optimised fit's, the baseline's under `voxelize`)."""
    if method not in METHODS:
        raise UserError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    if not reader.has_occ_gt:
        raise UserError("the store has no Occ3D GT (occ_gt): fit metrics need it (prep nuscenes --occ-gt DIR)")
    gts = {}
    for i in indices:
        gts[i] = reader.occ_gt(i)
        if gts[i] is None:
            raise UserError(f"sample {i} ({reader.sample(i)['sample_token']}) has no Occ3D GT")
    t0 = time.time()
    ds = RayDataset(reader, cfg, indices, train=True)
    cw = class_weights(reader, cfg, list(range(len(reader))))
    vocab = reader.vocabulary
    n_cls = vocab.num_semantic
    occ = OccMetrics(len(vocab.names))
    vox_occ = OccMetrics(len(vocab.names))
    cov = np.zeros((2, n_cls), np.int64)
    sem_cov = np.zeros((2, n_cls), np.int64)
    scoring = cfg.grid.spec.coarsens(reader.grid)
    rows = []
    root = Path(out) if out is not None else None
    dirs = sample_dirs(reader, indices, root) if root is not None else {}  # checked before any work
    for i in tqdm(indices, desc="fit", unit="sample", disable=not progress):
        s = reader.sample(i)
        gt = gts[i]
        sem_gt, mask = np.asarray(gt["semantics"]), np.asarray(gt["mask_camera"], bool)
        frames = ds.label_frames(i, s)
        target = dense_target(sem_gt, mask, cfg.grid.shape, n_cls) if cfg.supervision == "3d" else None
        masks = ds.mask_pool(i, s) if ds.mask_rays else None
        vox = scoring.to_labels_numpy(voxelize_frames(frames, cfg.grid.spec, n_cls))
        vox_occ.update(vox, sem_gt, mask)
        vm = _scores(vox, sem_gt, mask, len(vocab.names))
        res = None
        if method != "voxelize":
            res = fit_frames(frames, cfg, iters=iters, lr=lr, class_weights=cw, occ_target=target, device=device,
                             seed=mix_seed(cfg.seed, i), index=i, free_beams=reader.free_beams(i),
                             num_classes=n_cls, masks=masks,
                             score=lambda sem, g=sem_gt, k=mask: _scores(scoring.to_labels_numpy(sem), g, k,
                                                                         len(vocab.names)))
        sc = semantic_coverage_counts(frames, masks, sem_gt, mask, reader.grid, n_cls)
        sem_cov += sc
        pred = vox if res is None else scoring.to_labels_numpy(res.semantics)
        occ.update(pred, sem_gt, mask)
        om = vm if res is None else _scores(pred, sem_gt, mask, len(vocab.names))
        ends = scoring.to_labels_numpy(endpoint_grid(frames, cfg.grid.spec))
        c = coverage_counts(ends, sem_gt, mask, n_cls)
        cov += c
        rows.append({"sample": i, "sample_token": s["sample_token"], "scene": s["scene_name"],
                     "miou": om["miou"], "geometry_iou": om["geometry_iou"],
                     "label_coverage": share(c[0].sum(), c[1].sum()),
                     "semantic_coverage": share(sc[0].sum(), sc[1].sum()),
                     "voxelize_miou": vm["miou"], "voxelize_geometry_iou": vm["geometry_iou"],
                     "threshold": res.threshold["threshold"] if res else None,
                     "threshold_score": res.threshold["score"] if res else None,
                     "rays": res.rays if res else len(ends_in_grid(frames, cfg.grid.spec)[2]),
                     "loss_first": res.loss_first if res else None, "loss_last": res.loss_last if res else None,
                     "seconds": res.seconds if res else None,
                     "epochs": iters * cfg.data.rays / res.rays if res and res.rays else None,
                     "plateau_iter": res.plateau if res else None, "trace": res.trace if res else []})
        if root is not None:
            d = dirs[i]
            d.mkdir(parents=True, exist_ok=True)
            if res is None:
                savez_atomic(d / "labels.npz", semantics=vox)
            else:
                savez_atomic(d / "labels.npz", semantics=res.semantics,
                             density=res.density.numpy().astype(np.float16))
    o = occ.compute()
    v = vox_occ.compute()
    names = vocab.names
    m = {
        "method": method,
        "voxelize": {"miou": v["miou"], "geometry_iou": v["geometry_iou"],
                     "iou_per_class": dict(zip(names, v["iou_per_class"], strict=True)),
                     "rule": "voxels holding a label end point: the end points' majority class; the rest free "
                             "(the rays the fit draws from; no optimisation)"},
        "miou": o["miou"], "iou_per_class": dict(zip(names, o["iou_per_class"], strict=True)),
        "geometry_iou": o["geometry_iou"], "miou_nomask": o["miou_nomask"],
        "iou_per_class_nomask": dict(zip(names, o["iou_per_class_nomask"], strict=True)),
        "geometry_iou_nomask": o["geometry_iou_nomask"], "occ_samples": o["occ_samples"],
        "label_coverage": share(cov[0].sum(), cov[1].sum()),
        "label_coverage_per_class": {names[k]: share(cov[0, k], cov[1, k]) for k in range(n_cls)},
        "semantic_coverage": share(sem_cov[0].sum(), sem_cov[1].sum()),
        "semantic_coverage_per_class": {names[k]: share(sem_cov[0, k], sem_cov[1, k]) for k in range(n_cls)},
        "gt_occupied_camera_voxels": int(cov[1].sum()),
        "confusion_camera": o["confusion_camera"],
        "thresholds": {str(r["sample"]): r["threshold"] for r in rows},
        "threshold_rule": ("3D geometry IoU in mask_camera" if cfg.supervision == "3d"
                           else LABEL_VOXEL_METRIC if uses_label_voxels(cfg)
                           else "2D depth agreement of the first crossing on the key rays")
                          + f", chosen on {FIT_SOURCE}",
        "per_sample": rows, "samples": len(indices), "supervision": cfg.supervision,
        "convergence": convergence.mean_trace(rows),
        "plateau_rule": f"the first traced iteration within {100 * PLATEAU_TOLERANCE:g} point of the last geometry IoU",
        "semantic_source": semantic_source(cfg, reader.has_semantics), "mask_rays_per_iter": ds.mask_rays,
        "aux_frames": ds.aux, "use_motion_masks": cfg.data.use_motion_masks,
        "iters": iters, "lr": lr, "rays_per_iter": cfg.data.rays if cfg.supervision != "3d" else 0,
        "loss_terms": {t.name: getattr(cfg.loss, t.name) for t in active_terms(cfg)},
        "grid": cfg.grid.spec.to_record(), "render_step": cfg.render.step, "device": str(device),
        "wall_s": time.time() - t0, "git_commit": git_commit(), "config_digest": cfg.digest(),
        "config": cfg.to_dict(),
        "protocol": {
            "occ3d": "eval's: 18x18 confusion over voxels with mask_camera (and all voxels for *_nomask); "
                     "mIoU over classes 0-16; prediction = argmax class where density > threshold, free elsewhere",
            "label_coverage": "share of GT-occupied mask_camera voxels that hold or 26-border the end point "
                              "of a key or auxiliary label ray the fit drew from (rays ending inside the grid; "
                              "dynamic aux labels dropped unless use_motion_masks is false)",
            "semantic_coverage": "share of GT-occupied mask_camera voxels that hold or 26-border a semantic label "
                                 "of their own class: a classed label ray's end point, or the first GT-occupied "
                                 "voxel along a key-frame mask ray (store grid)",
        },
    }
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(root / "metrics.json", json.dumps(clean_json(m), indent=1))
        write_atomic(root / "metrics.md", markdown(m))
        convergence.plot(rows, root / "convergence.png")
    return m


def _scores(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, n_names: int) -> dict:
    """One sample's Occ3D scores (eval's confusion rules)."""
    one = OccMetrics(n_names)
    one.update(pred, gt, mask)
    return one.compute()


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def markdown(m: dict) -> str:
    """metrics.md: the headline, per-class IoU beside label coverage, the per-sample rows."""
    masks = f" ({m['mask_rays_per_iter']} mask rays/iteration)" if m.get("mask_rays_per_iter") else ""
    lines = [
        "# renderocc fit", "",
        f"- supervision: **{m['supervision']}**, semantics from {m.get('semantic_source')}{masks}; "
        f"aux frames ±{m['aux_frames']}, motion masks "
        f"{'used' if m['use_motion_masks'] else 'ignored (dynamic aux labels kept)'}",
        f"- {m['samples']} samples, {m['iters']} iterations each (Adam lr {m['lr']:g}, "
        f"{m['rays_per_iter']} rays/iteration), {m['wall_s']:.1f} s; config {m['config_digest']}, "
        f"commit {m['git_commit'] or 'unknown'}",
        f"- threshold: {m['threshold_rule']}", "",
        "| metric | with mask_camera | all voxels |", "|---|---:|---:|",
        f"| mIoU (classes 0–{len(m['iou_per_class']) - 2}) | {_pct(m['miou'])} | {_pct(m['miou_nomask'])} |",
        f"| geometry IoU | {_pct(m['geometry_iou'])} | {_pct(m['geometry_iou_nomask'])} |",
        f"| voxelisation baseline mIoU | {_pct(m['voxelize']['miou'])} | |",
        f"| voxelisation baseline geometry IoU | {_pct(m['voxelize']['geometry_iou'])} | |",
        f"| label coverage | {_pct(m['label_coverage'])} | |",
        f"| semantic coverage | {_pct(m.get('semantic_coverage'))} | |", "",
        "| class | IoU (mask) | IoU (all) | label coverage |", "|---|---:|---:|---:|",
    ]
    for name, v in m["iou_per_class"].items():
        lines.append(f"| {name} | {_pct(v)} | {_pct(m['iou_per_class_nomask'][name])} | "
                     f"{_pct(m['label_coverage_per_class'].get(name))} |")
    lines += ["", "| sample | scene | mIoU | geometry IoU | baseline mIoU | baseline geometry IoU | coverage | "
              "threshold | rays | loss first → last |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in m["per_sample"]:
        fitted = r["threshold"] is not None
        thr = f"{r['threshold']:.3g}" if fitted else "–"
        loss = f"{r['loss_first']:.3f} → {r['loss_last']:.3f}" if fitted else "–"
        lines.append(f"| {r['sample']} | {r['scene']} | {_pct(r['miou'])} | {_pct(r['geometry_iou'])} | "
                     f"{_pct(r['voxelize_miou'])} | {_pct(r['voxelize_geometry_iou'])} | "
                     f"{_pct(r['label_coverage'])} | {thr} | {r['rays']} | {loss} |")
    lines += convergence.table(m["per_sample"])
    if any(r.get("plateau_iter") for r in m["per_sample"]):
        lines += ["", f"Plateau ({m['plateau_rule']}): " + ", ".join(
            f"sample {r['sample']} at iteration {r['plateau_iter']}"
            + (f" ({r['epochs']:.2f} epochs of label rays in all)" if r.get("epochs") is not None else "")
            for r in m["per_sample"] if r.get("plateau_iter"))]
    lines += ["", "IoU and coverage in %. `–`: class absent from both GT and prediction.",
              f"Free voxels: {len(m['iou_per_class']) - 1}; ignored GT: {IGNORE}."]
    return "\n".join(lines) + "\n"
