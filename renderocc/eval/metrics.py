"""Occupancy and rendering metrics, as streaming accumulators over samples.

Occ3D protocol (3D): an 18×18 confusion matrix (rows = GT, columns = prediction) over the voxels
with `mask_camera`; IoU per class from it; mIoU = mean IoU of classes 0..16. Free (17) is left out
of the mean but its voxels count as the other classes' false positives / negatives. A class with
neither GT nor prediction voxels has no IoU (NaN) and is left out of the mean, as in the Occ3D
reference code. Geometric IoU is occupied (class != free) vs free.

Everything is accumulated as integer counts or float64 sums so a dataset is summed sample by
sample and the result does not depend on how samples are batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from renderocc.classes import FREE, IGNORE, NUM_SEMANTIC

N_OCC = NUM_SEMANTIC + 1  # 18 classes including free


def _np(x) -> np.ndarray:
    """numpy view of a numpy array or a (possibly GPU, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(gt, pred, n_classes: int, mask=None) -> np.ndarray:
    """(n, n) int64 counts, rows = GT class, columns = predicted class.

    Entries whose GT is IGNORE (or outside 0..n-1) and, when `mask` is given, entries where the
    mask is false are not counted. Predictions outside 0..n-1 are an error: they would silently
    shift counts.
    """
    gt = _np(gt).reshape(-1).astype(np.int64)
    pred = _np(pred).reshape(-1).astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred sizes differ: {gt.shape} vs {pred.shape}")
    keep = (gt >= 0) & (gt < n_classes) & (gt != IGNORE)
    if mask is not None:
        m = _np(mask).reshape(-1).astype(bool)
        if m.shape != gt.shape:
            raise ValueError(f"mask size {m.shape} differs from gt {gt.shape}")
        keep &= m
    gt, pred = gt[keep], pred[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= n_classes):
        raise ValueError(f"prediction classes must be in 0..{n_classes - 1}")
    return np.bincount(gt * n_classes + pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU = TP / (TP + FP + FN) per class; NaN where the class is in neither GT nor prediction."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(ious: np.ndarray) -> float:
    """Mean of the non-NaN IoUs (NaN when every class is NaN)."""
    valid = ious[~np.isnan(ious)]
    return float(valid.mean()) if valid.size else float("nan")


def geometry_iou(cm: np.ndarray, free: int = FREE) -> float:
    """IoU of 'occupied' (any class but free) from an Occ3D confusion matrix."""
    occ = np.ones(cm.shape[0], dtype=bool)
    occ[free] = False
    tp = cm[np.ix_(occ, occ)].sum()
    fp = cm[free, occ].sum()
    fn = cm[occ, free].sum()
    denom = tp + fp + fn
    return float(tp / denom) if denom else float("nan")


@dataclass
class OccMetrics:
    """Occ3D 3D metrics accumulated over samples, with and without `mask_camera`."""

    n_classes: int = N_OCC  # the vocabulary's classes + free (last)
    cm_camera: np.ndarray | None = None
    cm_all: np.ndarray | None = None
    samples: int = 0

    def __post_init__(self) -> None:
        n = self.n_classes
        self.cm_camera = np.zeros((n, n), np.int64) if self.cm_camera is None else self.cm_camera
        self.cm_all = np.zeros((n, n), np.int64) if self.cm_all is None else self.cm_all

    def update(self, pred, gt, mask_camera=None) -> None:
        """Add one sample (or a batch): `pred`, `gt` class grids 0..n_classes-1 (free last) of one shape."""
        n = self.n_classes
        self.cm_all += confusion_matrix(gt, pred, n)
        if mask_camera is not None:
            self.cm_camera += confusion_matrix(gt, pred, n, mask_camera)
        else:
            self.cm_camera += confusion_matrix(gt, pred, n)
        self.samples += 1

    def compute(self) -> dict:
        """miou / iou_per_class / geometry_iou (camera mask) and the same with `_nomask`."""
        out: dict = {"occ_samples": self.samples}
        for suffix, cm in (("", self.cm_camera), ("_nomask", self.cm_all)):
            ious = iou_per_class(cm)
            out["miou" + suffix] = mean_iou(ious[:self.n_classes - 1])
            out["iou_per_class" + suffix] = [_f(v) for v in ious]
            out["geometry_iou" + suffix] = geometry_iou(cm, self.n_classes - 1)
        out["confusion_camera"] = self.cm_camera.tolist()
        return out


@dataclass
class DepthMetrics:
    """AbsRel, RMSE and δ<1.25 of predicted vs labelled depth, summed over valid labels.

    Valid = finite label > min_depth and finite prediction; predictions are clamped to
    `min_depth` so δ and AbsRel stay finite where a ray rendered nothing.
    """

    min_depth: float = 1e-3
    n: int = 0
    abs_rel: float = 0.0
    sq: float = 0.0
    delta1: int = 0
    # by labelled depth (m): far surfaces rendered short (a fog in front) hide behind the overall mean
    bin_edges: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0, float("inf"))
    bin_n: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    bin_abs_rel: np.ndarray = field(default_factory=lambda: np.zeros(4))
    bin_log_ratio: np.ndarray = field(default_factory=lambda: np.zeros(4))

    def update(self, pred, gt) -> None:
        pred = _np(pred).reshape(-1).astype(np.float64)
        gt = _np(gt).reshape(-1).astype(np.float64)
        keep = np.isfinite(gt) & (gt > self.min_depth) & np.isfinite(pred)
        p, g = np.maximum(pred[keep], self.min_depth), gt[keep]
        self.n += int(g.size)
        self.abs_rel += float((np.abs(p - g) / g).sum())
        self.sq += float(((p - g) ** 2).sum())
        self.delta1 += int((np.maximum(p / g, g / p) < 1.25).sum())
        b = np.searchsorted(np.asarray(self.bin_edges[1:-1]), g, side="right")
        self.bin_n += np.bincount(b, minlength=len(self.bin_n))
        self.bin_abs_rel += np.bincount(b, np.abs(p - g) / g, minlength=len(self.bin_n))
        self.bin_log_ratio += np.bincount(b, np.log(p / g), minlength=len(self.bin_n))

    def by_distance(self) -> list[dict]:
        """Per labelled-depth bin: pixels, AbsRel and the geometric-mean ratio rendered / labelled."""
        rows = []
        for k, (lo, hi) in enumerate(zip(self.bin_edges[:-1], self.bin_edges[1:], strict=True)):
            n = int(self.bin_n[k])
            rows.append({"from_m": lo, "to_m": None if math.isinf(hi) else hi, "pixels": n,
                         "abs_rel": float(self.bin_abs_rel[k] / n) if n else None,
                         "ratio": float(math.exp(self.bin_log_ratio[k] / n)) if n else None})
        return rows

    def compute(self) -> dict:
        if not self.n:
            nan = float("nan")
            return {"depth_abs_rel": nan, "depth_rmse": nan, "depth_delta1": nan, "depth_pixels": 0,
                    "depth_by_distance": self.by_distance()}
        return {
            "depth_by_distance": self.by_distance(),
            "depth_abs_rel": self.abs_rel / self.n,
            "depth_rmse": float(np.sqrt(self.sq / self.n)),
            "depth_delta1": self.delta1 / self.n,
            "depth_pixels": self.n,
        }


@dataclass
class Sem2DMetrics:
    """2D semantic mIoU over the semantic classes (Occ3D: 0..16) of rendered vs labelled pixel
    classes (255 ignored)."""

    n_classes: int = NUM_SEMANTIC
    cm: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.cm = np.zeros((self.n_classes, self.n_classes), np.int64) if self.cm is None else self.cm

    def update(self, pred, gt) -> None:
        self.cm += confusion_matrix(gt, pred, self.n_classes)

    def compute(self) -> dict:
        ious = iou_per_class(self.cm)
        return {
            "sem2d_miou": mean_iou(ious),
            "sem2d_iou_per_class": [_f(v) for v in ious],
            "sem2d_pixels": int(self.cm.sum()),
        }


@dataclass
class FloaterMetrics:
    """Floaters: predicted-occupied voxels that are free in GT with the voxel centre above
    `min_z` (2 m in the ego frame: above cars and people, so mostly phantom density in the air,
    which line-of-sight evidence such as free LiDAR beams should remove). Counted over all voxels
    and inside `mask_camera`; the share is of the predicted-occupied voxels above `min_z`."""

    min_z: float = 2.0
    free: int = FREE  # the vocabulary's free class
    samples: int = 0
    counts: dict = field(default_factory=lambda: {k: 0 for k in (
        "floaters", "pred_occupied", "gt_free", "floaters_mask", "pred_occupied_mask", "gt_free_mask")})

    def update(self, pred, gt, z_centres, mask_camera=None) -> None:
        """`pred`, `gt`: class grids (X, Y, Z) 0..17 (gt may hold IGNORE); `z_centres` (Z,) metres."""
        pred, gt = _np(pred), _np(gt)
        high = (np.asarray(z_centres) > self.min_z)[None, None, :]
        known = (gt != IGNORE) & high
        occ, free = (pred != self.free) & known, (gt == self.free) & known
        c = self.counts
        c["floaters"] += int((occ & free).sum())
        c["pred_occupied"] += int(occ.sum())
        c["gt_free"] += int(free.sum())
        if mask_camera is not None:
            m = _np(mask_camera).astype(bool)
            c["floaters_mask"] += int((occ & free & m).sum())
            c["pred_occupied_mask"] += int((occ & m).sum())
            c["gt_free_mask"] += int((free & m).sum())
        self.samples += 1

    def compute(self) -> dict:
        c, n = self.counts, max(self.samples, 1)

        def share(a: str, b: str) -> float | None:
            return c[a] / c[b] if c[b] else None

        return {"min_z": self.min_z, "samples": self.samples,
                "per_sample": c["floaters"] / n, "share_of_predicted": share("floaters", "pred_occupied"),
                "share_of_gt_free": share("floaters", "gt_free"),
                "per_sample_mask_camera": c["floaters_mask"] / n,
                "share_of_predicted_mask_camera": share("floaters_mask", "pred_occupied_mask"),
                "share_of_gt_free_mask_camera": share("floaters_mask", "gt_free_mask"),
                "counts": dict(c)}


def _f(v: float) -> float | None:
    """JSON-friendly float: NaN becomes None (null)."""
    return None if np.isnan(v) else float(v)
