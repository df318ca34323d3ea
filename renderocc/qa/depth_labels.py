"""Depth-label QA by scene condition and surface class (qa.json `depth_labels`).

Why: LiDAR labels degrade where the conditions are hard (wet pavement mirrors beams away, night
makes 2D masks worse), and a team needs to see where before it trains. Any vocabulary works; the
parts that need dense 2D masks (`prep masks`) are left out when the store has none.

Definitions (also written into qa.json):
- condition: from the scene description (the nuScenes one, kept by prep): "night" when it says
  night, "+wet" when it says wet or rain, else "day"; "unknown" for stores prepped before prep
  kept descriptions.
- label density: depth labels per image and per megapixel of the original image.
- depth outlier: a label whose depth differs by more than `outlier_threshold` (relative) from the
  local plane fitted to its `outlier_neighbours` nearest labels of the same image (inverse depth
  affine in u, v: exact for planes), searched within NEIGHBOUR_DEG of view angle (so the test
  follows the LiDAR's angular spacing, not the image size); labels with fewer than MIN_NEIGHBOURS
  such neighbours are not tested, and a label with MIN_SUPPORT neighbours at its own depth (within
  the threshold) is an object edge, not an outlier. Flags isolated depths: spurious returns,
  parallax leaks (background seen by the LiDAR through a foreground object the camera sees),
  depth bleeding.
- drop-out (needs masks): the image is cut into cells of CELL_DEG x CELL_DEG (2-3 LiDAR ring
  spacings, so a cell within reach always holds a ring); a cell counts when the ray through its
  centre meets the ground plane within `dropout_reach` metres (below the horizon, in LiDAR reach);
  the drop-out share of a class is the share of its mask pixels in counted cells that hold no
  label at all.
- mask disagreement (needs masks): at each label with a LiDAR class and a mask class (stored
  pixel nearest to the label), the share where they differ; per LiDAR class and as a confusion
  matrix (top pairs).
"""

from __future__ import annotations

import re

import numpy as np

from renderocc.classes import IGNORE
from renderocc.ops import knn2d

NEIGHBOUR_DEG = 2.0   # neighbour search radius (view angle): ~6 azimuth steps, 1.5 ring spacings of a 32-ring LiDAR
MIN_NEIGHBOURS = 4
MIN_SUPPORT = 2   # neighbours at the label's own depth that make it a surface (an edge), not an outlier
CELL_DEG = 3.0
UNKNOWN = "unknown"
TOP_PAIRS = 10


def condition_of(description: str | None) -> str:
    """'day' | 'night', plus '+wet', from a scene description; 'unknown' without one."""
    if not description:
        return UNKNOWN
    text = description.lower()
    light = "night" if re.search(r"\bnight\b", text) else "day"
    return light + ("+wet" if re.search(r"\b(wet|rain|rainy|raining)\b", text) else "")


def scene_conditions(reader) -> dict[str, str]:
    """Scene name → condition, from the store manifest's shard records."""
    shards = (getattr(reader, "manifest", None) or {}).get("shards", [])
    return {s["scene_name"]: condition_of(s.get("scene_description")) for s in shards}


def conditions_of_store(reader) -> list[str]:
    """The store's conditions in a fixed order (day, night, ..., unknown): the rows of every count."""
    known = scene_conditions(reader)
    scenes = reader.scene_names() if hasattr(reader, "scene_names") else \
        [reader.sample(i)["scene_name"] for i in range(len(reader))]
    found = {known.get(s, UNKNOWN) for s in scenes}
    order = ["day", "night", "day+wet", "night+wet", UNKNOWN]
    return [c for c in order if c in found] or [UNKNOWN]


def empty_counts(n_cond: int, n_cls: int, masks: bool) -> dict[str, np.ndarray]:
    """Zeroed counters (summed over samples and over QA parts)."""
    z = {"cq_images": np.zeros(n_cond, np.int64), "cq_pixels": np.zeros(n_cond, np.int64),
         "cq_labels": np.zeros((n_cond, n_cls + 1), np.int64),     # last column: no semantic label
         "cq_tested": np.zeros((n_cond, n_cls + 1), np.int64),
         "cq_outliers": np.zeros((n_cond, n_cls + 1), np.int64)}
    if masks:
        z.update({k: np.zeros((n_cond, n_cls), np.int64) for k in
                  ("cq_mask_px", "cq_mask_area", "cq_reach_px", "cq_dropout_px", "cq_labels_in_mask")})
        z["cq_confusion"] = np.zeros((n_cond, n_cls, n_cls), np.int64)
    return z


def neighbours(points: np.ndarray, k: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(dist, idx), each (n, k): every point's k nearest other points closer than `radius`, nearest
    first; missing ones are inf / n. Compiled grid search when the extension is there (ties: lower
    index first), else scipy's kd-tree (ties in its own order)."""
    return knn2d(points, k, radius)


def depth_outliers(u: np.ndarray, v: np.ndarray, depth: np.ndarray, radius_px: float, k: int,
                   threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(tested, outlier) bool per label: relative distance of its depth to the local surface fitted
    to its k nearest labels (image space, within radius_px) above `threshold`, and fewer than
    MIN_SUPPORT of those neighbours within `threshold` of its own depth (a label on the edge of an
    object has neighbours on its own surface: an edge is not an outlier, an isolated depth is).

    The surface is a plane: inverse depth is affine in (u, v) for a plane, so a least-squares fit of
    1/z on the neighbours' offsets (ridge on the slopes, so a row of neighbours on one LiDAR ring
    still predicts along it) is exact on flat ground seen at grazing angles, where the depth of
    neighbours on the next ring differs a lot."""
    n = len(depth)
    if n <= MIN_NEIGHBOURS:
        return np.zeros(n, bool), np.zeros(n, bool)
    dist, idx = neighbours(np.stack([u, v], 1), min(k, n - 1), radius_px)
    idx = np.minimum(idx, n - 1)                                  # missing ones (n): any row, weight 0
    w = np.isfinite(dist).astype(np.float64)
    count = w.sum(1)
    du = (u[idx] - u[:, None]) * (w / radius_px)               # missing neighbours: 0
    dv = (v[idx] - v[:, None]) * (w / radius_px)
    y = w / depth[idx]
    ridge = 1e-3 * count
    # The normal equations, [[Suu + ridge, Suv, Su], [Suv, Svv + ridge, Sv], [Su, Sv, count]]
    # x = [Suy, Svy, Sy]; only x[2] (the plane at the label) is needed: Cramer's rule. The
    # matrix is positive definite once count > 0 (ridge on the slopes), so det > 0.
    a, b, e = (du * du).sum(1) + ridge, (du * dv).sum(1), (dv * dv).sum(1) + ridge
    su, sv = du.sum(1), dv.sum(1)
    ry, rv, r1 = (du * y).sum(1), (dv * y).sum(1), y.sum(1)
    tested = count >= MIN_NEIGHBOURS
    det = a * (e * count - sv * sv) - b * (b * count - sv * su) + su * (b * sv - e * su)
    num = a * (e * r1 - rv * sv) - b * (b * r1 - rv * su) + ry * (b * sv - e * su)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_z = np.where(tested, num / det, r1)                 # the fitted plane at the label itself
    support = (w * (np.abs(depth[idx] - depth[:, None]) <= threshold * depth[:, None])).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        fitted = 1.0 / inv_z
        off = ~(np.abs(depth - fitted) <= threshold * np.abs(fitted))   # also a fit behind the camera
    return tested, tested & off & (support < MIN_SUPPORT)


def to_stored(u: np.ndarray, v: np.ndarray, K: np.ndarray, K_orig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Original-image label positions → nearest stored pixel (column, row)."""
    M = np.asarray(K, np.float64) @ np.linalg.inv(np.asarray(K_orig, np.float64))
    x = M[0, 0] * u + M[0, 1] * v + M[0, 2]
    y = M[1, 0] * u + M[1, 1] * v + M[1, 2]
    return np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)


def reach_cells(K: np.ndarray, cam2ego: np.ndarray, shape_hw: tuple[int, int], reach: float
                ) -> tuple[int, np.ndarray]:
    """(cell size in stored px, (rows, cols) bool: the ray through the cell centre meets the ground
    plane z = 0 of the ego frame within `reach` metres)."""
    h, w = shape_hw
    cs = max(2, int(round(K[0, 0] * np.tan(np.deg2rad(CELL_DEG)))))
    rows, cols = -(-h // cs), -(-w // cs)
    cu, cv = np.meshgrid((np.arange(cols) + 0.5) * cs - 0.5, (np.arange(rows) + 0.5) * cs - 0.5)
    d_cam = np.stack([(cu - K[0, 2]) / K[0, 0], (cv - K[1, 2]) / K[1, 1], np.ones_like(cu)], -1)
    d = d_cam @ np.asarray(cam2ego)[:3, :3].T
    oz = cam2ego[2, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(d[..., 2] < -1e-9, -oz / d[..., 2], np.inf)
    return cs, (s * np.linalg.norm(d, axis=-1)) <= reach


def dropout_cells(iu: np.ndarray, iv: np.ndarray, mask: np.ndarray, K: np.ndarray, cam2ego: np.ndarray,
                  reach: float, n_cls: int) -> dict[str, np.ndarray]:
    """Per class: mask pixels, those in counted cells, those in counted cells without a label; and
    the (rows, cols) drop-out cell map (counted, no label, some class present) for pictures."""
    h, w = mask.shape
    cs, reach_map = reach_cells(K, cam2ego, (h, w), reach)
    rows, cols = reach_map.shape
    cell_of_px = (np.arange(h)[:, None] // cs) * cols + (np.arange(w)[None, :] // cs)
    inside = (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
    has_label = np.zeros(rows * cols, bool)
    has_label[cell_of_px[iv[inside], iu[inside]]] = True
    m = mask.ravel().astype(np.int64)
    cls = m != IGNORE
    per_cell = np.bincount(cell_of_px.ravel()[cls] * n_cls + m[cls], minlength=rows * cols * n_cls
                           ).reshape(rows * cols, n_cls)
    counted = reach_map.ravel()
    empty = counted & ~has_label
    return {"mask_px": per_cell.sum(0), "reach_px": per_cell[counted].sum(0), "dropout_px": per_cell[empty].sum(0),
            "cells": (empty & (per_cell.sum(1) > 0)).reshape(rows, cols), "cell_px": cs}


def add_image(counts: dict, cond: int, lab: dict, sel: np.ndarray, cam: dict, orig_wh: tuple[int, int],
              mask: np.ndarray | None, opts) -> dict:
    """Count one image's labels (rows `sel` of `lab`) into `counts` row `cond`; return per-image figures."""
    n_cls = counts["cq_labels"].shape[1] - 1
    u, v = lab["u"][sel].astype(np.float64), lab["v"][sel].astype(np.float64)
    depth = lab["depth"][sel].astype(np.float64)
    label = np.asarray(lab["label"])[sel].astype(np.int64)
    label = np.where(label < n_cls, label, n_cls)            # 255 (no semantic label) → last column
    K, K_orig = np.asarray(cam["K"], np.float64), np.asarray(cam["K_orig"], np.float64)
    radius = K_orig[0, 0] * np.tan(np.deg2rad(NEIGHBOUR_DEG))
    tested, out = depth_outliers(u, v, depth, radius, opts.outlier_neighbours, opts.outlier_threshold)
    counts["cq_images"][cond] += 1
    counts["cq_pixels"][cond] += int(orig_wh[0]) * int(orig_wh[1])
    counts["cq_labels"][cond] += np.bincount(label, minlength=n_cls + 1)
    counts["cq_tested"][cond] += np.bincount(label[tested], minlength=n_cls + 1)
    counts["cq_outliers"][cond] += np.bincount(label[out], minlength=n_cls + 1)
    row = {"condition_index": cond, "depth_outliers": int(out.sum()),
           "labels_per_mpx": 1e6 * len(depth) / max(1, int(orig_wh[0]) * int(orig_wh[1]))}
    if mask is None or "cq_mask_px" not in counts:
        return row
    h, w = mask.shape
    iu, iv = to_stored(u, v, K, K_orig)
    inside = (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
    mcls = np.full(len(depth), IGNORE, np.int64)
    mcls[inside] = mask[iv[inside], iu[inside]]
    has_m = mcls != IGNORE
    counts["cq_labels_in_mask"][cond] += np.bincount(mcls[has_m], minlength=n_cls)[:n_cls]
    both = has_m & (label < n_cls)
    counts["cq_confusion"][cond] += np.bincount(label[both] * n_cls + mcls[both],
                                                minlength=n_cls * n_cls)[:n_cls * n_cls].reshape(n_cls, n_cls)
    d = dropout_cells(iu, iv, mask, K, cam["cam2ego"], opts.dropout_reach, n_cls)
    counts["cq_mask_px"][cond] += d["mask_px"]
    stored_per_orig = (K[0, 0] / K_orig[0, 0]) * (K[1, 1] / K_orig[1, 1])   # stored px per original px
    counts["cq_mask_area"][cond] += np.rint(d["mask_px"] / stored_per_orig).astype(np.int64)
    counts["cq_reach_px"][cond] += d["reach_px"]
    counts["cq_dropout_px"][cond] += d["dropout_px"]
    row["dropout_share"] = float(d["dropout_px"].sum() / d["reach_px"].sum()) if d["reach_px"].sum() else None
    row["mask_disagreement"] = int((label[both] != mcls[both]).sum())
    row["mask_compared"] = int(both.sum())
    return row


def _rate(num, den):
    return float(num) / float(den) if den else None


def section(counts: dict, conditions: list[str], names: list[str], opts) -> dict:
    """qa.json `depth_labels` from the summed counters."""
    n_cls = len(names)
    masks = "cq_mask_px" in counts
    per_condition, per_class, pairs = {}, [], []
    for k, cond in enumerate(conditions):
        imgs = int(counts["cq_images"][k])
        if not imgs:
            continue
        lab, tested, out = (np.asarray(counts[x][k]) for x in ("cq_labels", "cq_tested", "cq_outliers"))
        row = {"images": imgs, "labels_per_image": lab.sum() / imgs,
               "labels_per_mpx": _rate(1e6 * lab.sum(), counts["cq_pixels"][k]),
               "depth_outlier_rate": _rate(out.sum(), tested.sum()), "tested_labels": int(tested.sum())}
        if masks:
            conf = np.asarray(counts["cq_confusion"][k])
            row.update(dropout_share=_rate(counts["cq_dropout_px"][k].sum(), counts["cq_reach_px"][k].sum()),
                       mask_disagreement_rate=_rate(conf.sum() - np.trace(conf), conf.sum()),
                       mask_compared_labels=int(conf.sum()))
            off = conf.copy()
            np.fill_diagonal(off, 0)
            for flat in np.argsort(off.ravel(), kind="stable")[::-1][:TOP_PAIRS]:
                a, b = divmod(int(flat), n_cls)
                if off[a, b]:
                    pairs.append({"condition": cond, "lidar_class": names[a], "mask_class": names[b],
                                  "labels": int(off[a, b]), "share_of_lidar_class": _rate(off[a, b], conf[a].sum())})
        per_condition[cond] = row
        for c, name in enumerate([*names, "(no semantic label)"]):
            if not lab[c] and not (masks and c < n_cls and counts["cq_mask_px"][k][c]):
                continue
            r = {"condition": cond, "class": name, "labels": int(lab[c]),
                 "labels_per_image": lab[c] / imgs, "depth_outlier_rate": _rate(out[c], tested[c])}
            if masks and c < n_cls:
                conf = np.asarray(counts["cq_confusion"][k])
                r.update(labels_per_mpx_of_class_area=_rate(1e6 * counts["cq_labels_in_mask"][k][c],
                                                            counts["cq_mask_area"][k][c]),
                         in_reach_mask_px=int(counts["cq_reach_px"][k][c]),
                         dropout_share=_rate(counts["cq_dropout_px"][k][c], counts["cq_reach_px"][k][c]),
                         mask_disagreement_rate=_rate(conf[c].sum() - conf[c, c], conf[c].sum()))
            per_class.append(r)
    pairs.sort(key=lambda p: -p["labels"])
    tot = {x: np.asarray(counts[x]).sum() for x in counts}
    summary = {"depth_outlier_rate": _rate(tot["cq_outliers"], tot["cq_tested"]), "mask_agreement_rate": None,
               "masked_area_labelled_share": None}
    if masks:
        conf = np.asarray(counts["cq_confusion"]).sum(0)
        summary["mask_agreement_rate"] = _rate(np.trace(conf), conf.sum())
        dropout = _rate(tot["cq_dropout_px"], tot["cq_reach_px"])
        summary["masked_area_labelled_share"] = None if dropout is None else 1.0 - dropout
    return {"conditions": conditions, "per_condition": per_condition, "per_class": per_class,
            "confusion_top_pairs": pairs[:TOP_PAIRS] if masks else None, "has_masks": masks, "summary": summary,
            "options": {"outlier_threshold": opts.outlier_threshold, "outlier_neighbours": opts.outlier_neighbours,
                        "neighbour_deg": NEIGHBOUR_DEG, "min_neighbours": MIN_NEIGHBOURS,
                        "min_support": MIN_SUPPORT,
                        "dropout_reach_m": opts.dropout_reach, "cell_deg": CELL_DEG},
            "definitions": DEFINITIONS}


DEFINITIONS = {
    "condition": "from the scene description: night when it says night, +wet when it says wet or rain, else day; "
                 "unknown when the store has no description (prepped before prep kept them)",
    "labels_per_mpx": "depth labels per megapixel of the original image",
    "labels_per_mpx_of_class_area": "labels whose stored pixel the mask gives this class, per megapixel "
                                    "(original) of the class's mask area",
    "depth_outlier_rate": "share of labels whose depth is more than outlier_threshold (relative) from the plane "
                          "(inverse depth affine in u, v) fitted to their outlier_neighbours nearest labels in the "
                          "same image (within neighbour_deg of view angle; labels with fewer than min_neighbours "
                          "such neighbours are not tested) and with fewer than min_support neighbours at their own "
                          "depth (those are object edges)",
    "dropout_share": "share of a class's mask pixels, in image cells of cell_deg whose centre ray meets the ground "
                     "plane within dropout_reach_m, that lie in cells holding no depth label (LiDAR drop-outs)",
    "mask_disagreement_rate": "share of labels with a LiDAR class and a mask class where the two differ",
}
