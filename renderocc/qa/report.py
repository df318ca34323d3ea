"""Label-coverage statistics of a ray store: what supervision rendering can actually give.

One pass over the store collects per-image counts (labelled pixels, semantic pixels, mean luma),
histograms (2D classes, GT voxel classes, depth), the dynamic share per class / camera, and how
many GT voxels the key and auxiliary label rays cross on their way to their LiDAR return, and by
scene condition and surface class the depth labels' density, outliers, drop-outs and agreement
with 2D masks (qa/depth_labels.py). The result is one JSON-able dict (`qa.json`); `summary` holds
the scalars `--fail-under` checks.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from renderocc.classes import IGNORE, default_vocabulary
from renderocc.geometry import Grid, pixel_rays
from renderocc.ops import mark_crossed
from renderocc.outputs import share
from renderocc.qa import depth_labels as dl
from renderocc.store import layout

DEPTH_EDGES = np.arange(0.0, 101.0, 1.0)  # metres; deeper labels land in the last bin

# Every key of qa.json's `summary` (None when the store cannot tell): what --fail-under checks.
SUMMARY_KEYS: dict[str, str] = {
    "samples": "keyframes in the store",
    "images": "camera images (samples x cameras)",
    "labelled_pixels_per_image": "mean depth-labelled pixels per image",
    "labelled_pixels_per_image_min": "fewest depth-labelled pixels in any image",
    "semantic_pixels_per_image": "mean pixels with a semantic label per image",
    "semantic_share": "share of labelled pixels that carry a semantic label",
    "dark_images": "images with mean luma below --dark-luma",
    "few_label_images": "images with fewer labelled pixels than --few-labels",
    "bright_image_share": "share of images that are not dark",
    "well_labelled_image_share": "share of images with enough labels",
    "semantic_classes_present": "semantic classes of the store vocabulary present in the 2D labels",
    "dynamic_share": "share of labels marked dynamic (needs prep motion-masks)",
    "aux_rays_per_sample": "static auxiliary (neighbour-frame) rays per sample",
    "key_rays_ending_in_grid_share": "share of key label rays whose LiDAR return lies inside the grid",
    "grid_voxels_crossed_share": "share of grid voxels crossed by a key or auxiliary ray",
    "gt_occupied_crossed_share": "share of GT occupied voxels crossed by a key or auxiliary ray",
    "gt_occupied_crossed_share_key": "the same, key-frame rays only",
    "gt_camera_voxels_crossed_share": "share of GT mask_camera voxels crossed by a ray",
    "depth_outlier_rate": "share of depth labels far from the plane fitted to their image-space neighbours "
                          "(qa.json depth_labels)",
    "mask_agreement_rate": "share of labels whose LiDAR class equals the 2D mask's class (needs prep masks)",
    "masked_area_labelled_share": "share of mask pixels within LiDAR reach lying in a labelled cell: 1 - drop-out "
                                  "(needs prep masks)",
    "sweep_frames": "camera sweep frames (unlabelled camera frames between keyframes, prep --camera-sweeps)",
    "sweep_frames_per_sample": "camera sweep frames per keyframe",
    "sweep_labelled_pixels_per_image": "mean depth-labelled pixels per camera sweep image",
    "fit_miou": "mIoU in mask_camera of free grids fitted to the labels (qa --fit N)",
    "fit_geometry_iou": "geometry IoU in mask_camera of the same fits (qa --fit N)",
    "fit_label_coverage": "share of GT-occupied mask_camera voxels at a label-ray end point (qa --fit N)",
}


@dataclass
class QAOptions:
    """Thresholds that flag images, and the cost knobs of the coverage march."""

    dark_luma: float = 30.0  # mean luma (0..255) below which an image is "dark"
    few_labels: int = 100  # labelled pixels below which an image has "few labels"
    coverage: bool = True  # march label rays through the grid
    ray_stride: int = 1  # use every n-th label ray in the coverage march (speed)
    outlier_threshold: float = 0.1  # relative depth residual flagging a depth outlier (qa/depth_labels.py)
    outlier_neighbours: int = 8  # image-space neighbours a local plane is fitted to
    dropout_reach: float = 40.0  # metres: image cells whose ground point is nearer count for drop-outs


class _LabelCache:
    """Small LRU over `reader.labels(i)`: auxiliary rays re-read neighbouring samples."""

    def __init__(self, reader, size: int = 16):
        self.reader, self.size, self.data = reader, size, OrderedDict()

    def __call__(self, i: int) -> dict:
        if i in self.data:
            self.data.move_to_end(i)
            return self.data[i]
        lab = self.reader.labels(i)
        self.data[i] = lab
        if len(self.data) > self.size:
            self.data.popitem(last=False)
        return lab


def _luma(images: np.ndarray) -> np.ndarray:
    """Mean Rec.601 luma per image of uint8 (n, H, W, 3)."""
    pixels = np.ascontiguousarray(images).reshape(images.shape[0], -1, 3)
    # Integer sums are exact, so this equals the float64 mean (and skips a float64 copy); torch's
    # reduction over the interleaved channels is ~3x numpy's strided one.
    rgb = torch.from_numpy(pixels).sum(1, dtype=torch.int64).numpy() / pixels.shape[1]
    return rgb @ np.array([0.299, 0.587, 0.114])


def _rays_of(labels: dict, cams: dict, names: list[str], stride: int, drop_dynamic: bool):
    """Origins, directions, lengths of the label rays of one sample's labels (ego frame given)."""
    keep = np.isfinite(labels["depth"]) & (labels["depth"] > 0)
    if drop_dynamic and "dynamic" in labels:
        keep &= ~np.asarray(labels["dynamic"], bool)
    idx = np.flatnonzero(keep)[::max(stride, 1)]
    out = []
    cam_idx = np.asarray(labels["camera"])[idx]
    for c in np.flatnonzero(np.bincount(cam_idx)):  # the cameras present, ascending (np.unique, no sort)
        name = names[int(c)]
        if name not in cams:
            continue
        sel = idx[cam_idx == c]
        K, cam2ego = cams[name]
        o, d, scale = pixel_rays(labels["u"][sel], labels["v"][sel], K, cam2ego)
        out.append((o, d, labels["depth"][sel].astype(np.float64) * scale))
    if not out:
        z = np.zeros((0, 3))
        return z, z, np.zeros(0)
    return (np.concatenate([a[0] for a in out]), np.concatenate([a[1] for a in out]),
            np.concatenate([a[2] for a in out]))


def _coverage_rays(reader, i: int, sample: dict, labels_of, opts: QAOptions) -> dict:
    """Sample i's key rays and its neighbours' label rays (auxiliary), in its ego frame."""
    names = reader.cameras
    key_cams = {n: (c["K_orig"], c["cam2ego"]) for n, c in sample["cameras"].items()}
    aux = []
    for adj in sample.get("adjacent", []):
        j = int(adj["sample_index"])
        adj_sample = reader.sample(j)
        cams = {n: (adj_sample["cameras"][n]["K_orig"], m) for n, m in adj["cam2ego"].items()
                if n in adj_sample["cameras"]}
        aux.append(_rays_of(labels_of(j), cams, names, opts.ray_stride, drop_dynamic=True))
    return {"key": _rays_of(labels_of(i), key_cams, names, opts.ray_stride, drop_dynamic=False), "aux": aux}


def _walk_coverage(rays: dict, grid: Grid) -> dict:
    """Voxels crossed by the key rays, and by key + auxiliary rays. Arrays in, no store access,
    and the compiled walk releases the GIL: it runs beside the sample's other QA work."""
    o, d, L = rays["key"]
    end = o + d * L[:, None]
    inside = int(((end > grid.lo) & (end < grid.hi)).all(1).sum())
    hit_key = np.zeros(grid.shape, bool)
    mark_crossed(hit_key, o, d, L, grid)
    hit_all = hit_key.copy()
    for ao, ad, aL in rays["aux"]:
        mark_crossed(hit_all, ao, ad, aL, grid)
    return {"hit_key": hit_key, "hit_all": hit_all, "aux_rays": sum(len(a[0]) for a in rays["aux"]),
            "key_rays": len(o), "key_rays_inside": inside}


def _coverage_row(i: int, scene: str, walking, gt: tuple | None, free_id: int) -> dict:
    """qa.json coverage row of sample i from its walk (`gt`: its GT semantics and camera mask, or
    None)."""
    cov = walking.result()
    row = {"sample": i, "scene": scene,
           "key_rays": cov["key_rays"], "key_rays_ending_inside": cov["key_rays_inside"],
           "aux_rays": cov["aux_rays"],
           "voxels_crossed_key": int(cov["hit_key"].sum()),
           "voxels_crossed_all": int(cov["hit_all"].sum()),
           "grid_voxels": int(cov["hit_key"].size)}
    if gt is not None:
        g, mc = gt
        occ = (g != free_id) & (g != IGNORE)
        row.update(gt_occupied=int(occ.sum()), gt_camera=int(mc.sum()),
                   gt_occupied_crossed_key=int((occ & cov["hit_key"]).sum()),
                   gt_occupied_crossed_all=int((occ & cov["hit_all"]).sum()),
                   gt_camera_crossed_all=int((mc & cov["hit_all"]).sum()))
    return row


def collect(reader, opts: QAOptions | None = None, progress: bool = True) -> dict:
    """Walk the store once and return the qa.json dict."""
    opts = opts or QAOptions()
    return assemble(reader, opts, [collect_part(reader, opts, range(len(reader)), progress)])


def shard_samples(n_samples: int, index: int, count: int) -> range:
    """Shard `index` of `count`: a contiguous block of samples (neighbours share label reads)."""
    return range(n_samples * index // count, n_samples * (index + 1) // count)


def collect_part(reader, opts: QAOptions, samples: range, progress: bool = True) -> dict:
    """The raw counts of some samples (JSON-able), which `assemble` merges and summarises."""
    names = list(reader.cameras)
    vocab = getattr(reader, "vocabulary", None) or default_vocabulary()
    n_cls, free_id = vocab.num_semantic, vocab.free
    hist2d = np.zeros(n_cls, np.int64)
    unlabelled_sem = 0
    dyn_cls = np.zeros(n_cls, np.int64)
    dyn_cam = np.zeros(len(names), np.int64)
    rows_cam = np.zeros(len(names), np.int64)
    depth_hist = np.zeros((len(names), len(DEPTH_EDGES) - 1), np.int64)  # per camera
    gt_hist = np.zeros(n_cls + 1, np.int64)
    gt_hist_cam = np.zeros(n_cls + 1, np.int64)
    has_dyn = bool(getattr(reader, "has_motion_masks", False))
    images: list[dict] = []
    cov_rows: list[dict] = []
    labels_of = _LabelCache(reader)
    conditions = dl.conditions_of_store(reader)
    cond_of_scene = dl.scene_conditions(reader)
    has_masks = bool(getattr(reader, "has_semantic_masks", False))
    cq = dl.empty_counts(len(conditions), n_cls, has_masks)
    per_cam = ((getattr(reader, "manifest", None) or {}).get("image") or {}).get("per_camera", {})

    # Two threads, one core each: the coverage walks beside the rest. The compiled ops would each
    # start an OpenMP team too (one per calling thread); on two cores those teams spin against
    # each other (measured: the real scene's QA took 15.5 s instead of 5.0 s).
    walker = ThreadPoolExecutor(1, thread_name_prefix="qa-walk", initializer=torch.set_num_threads, initargs=(1,))
    pending = None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in tqdm(samples, desc="qa", disable=not progress, unit="sample"):
            s = reader.sample(i)
            walking = walker.submit(_walk_coverage, _coverage_rays(reader, i, s, labels_of, opts), reader.grid) \
                if opts.coverage else None
            lab = labels_of(i)
            cam = np.asarray(lab["camera"], np.int64)
            label = np.asarray(lab["label"])
            depth = np.asarray(lab["depth"], np.float64)
            sem = label != IGNORE
            dyn = np.asarray(lab["dynamic"], bool) if "dynamic" in lab else None
            has_dyn = has_dyn or dyn is not None
            hist2d += np.bincount(label[sem].astype(np.int64), minlength=n_cls)[:n_cls]
            unlabelled_sem += int((~sem).sum())
            ok = np.isfinite(depth) & (depth > 0)
            bins = np.searchsorted(DEPTH_EDGES, np.minimum(depth[ok], DEPTH_EDGES[-1] - 1e-6), "right") - 1
            np.add.at(depth_hist, (cam[ok], bins), 1)
            n_rows = np.bincount(cam, minlength=len(names))
            n_sem = np.bincount(cam[sem], minlength=len(names))
            rows_cam += n_rows
            if dyn is not None:
                dyn_cls += np.bincount(label[sem & dyn].astype(np.int64), minlength=n_cls)[:n_cls]
                dyn_cam += np.bincount(cam[dyn], minlength=len(names))
            lumas = _luma(reader.images(i))
            cond = conditions.index(cond_of_scene.get(s["scene_name"], dl.UNKNOWN))
            masks = reader.semantic_mask(i) if has_masks else None
            for c, name in enumerate(names):
                cam_c = s["cameras"][name]
                orig = per_cam.get(name, {}).get("original_size") or _original_size(reader.image_size, cam_c)
                row = dl.add_image(cq, cond, lab, ok & (cam == c), cam_c, orig,
                                   None if masks is None else masks[c], opts)
                images.append({"sample": i, "sample_token": s["sample_token"], "scene": s["scene_name"],
                               "camera": name, "labelled": int(n_rows[c]), "semantic": int(n_sem[c]),
                               "mean_luma": float(lumas[c]), "condition": conditions[row.pop("condition_index")],
                               **row})
            gt = reader.occ_gt(i) if getattr(reader, "has_occ_gt", False) else None
            if gt is not None:
                g = np.asarray(gt["semantics"]).astype(np.int64)
                gt_hist += np.bincount(g[g <= free_id].ravel(), minlength=n_cls + 1)[:n_cls + 1]
                mc = np.asarray(gt["mask_camera"], bool)
                gt_hist_cam += np.bincount(g[mc & (g <= free_id)].ravel(), minlength=n_cls + 1)[:n_cls + 1]
            if walking is not None:   # the row is made one sample later: the walker never waits
                if pending is not None:
                    cov_rows.append(_coverage_row(*pending, free_id))
                pending = (i, s["scene_name"], walking, None if gt is None else (g, mc))
        if pending is not None:
            cov_rows.append(_coverage_row(*pending, free_id))
    finally:
        walker.shutdown(cancel_futures=True)
        torch.set_num_threads(threads)
    counts = {"hist2d": hist2d, "unlabelled_sem": unlabelled_sem, "depth_hist": depth_hist, "gt_hist": gt_hist,
              "gt_hist_cam": gt_hist_cam, "dyn_cls": dyn_cls, "dyn_cam": dyn_cam, "rows_cam": rows_cam, **cq}
    return {"samples": [samples.start, samples.stop], "images": images, "coverage_rows": cov_rows,
            "has_dynamic": has_dyn, "counts": {k: np.asarray(v).tolist() for k, v in counts.items()}}


def assemble(reader, opts: QAOptions, parts: list[dict]) -> dict:
    """The qa.json dict of one or more parts (in any order) that together cover the store."""
    parts = sorted(parts, key=lambda p: p["samples"][0])
    counts = {k: sum(np.asarray(p["counts"][k], np.int64) for p in parts) for k in parts[0]["counts"]}
    images = [row for p in parts for row in p["images"]]
    cov_rows = [row for p in parts for row in p["coverage_rows"]]
    has_dyn = any(p["has_dynamic"] for p in parts)
    report = _assemble(reader, opts, list(reader.cameras), images, cov_rows, counts["hist2d"],
                       int(counts["unlabelled_sem"]), counts["depth_hist"], counts["gt_hist"], counts["gt_hist_cam"],
                       has_dyn, counts["dyn_cls"], counts["dyn_cam"], counts["rows_cam"])
    vocab = getattr(reader, "vocabulary", None) or default_vocabulary()
    section = dl.section({k: v for k, v in counts.items() if k.startswith("cq_")}, dl.conditions_of_store(reader),
                         vocab.names[:vocab.num_semantic], opts)
    report["summary"].update(section.pop("summary"))
    report["depth_labels"] = section
    for row in report["per_scene"]:
        row["condition"] = dl.scene_conditions(reader).get(row["scene"], dl.UNKNOWN)
    return report


def _original_size(stored_wh, cam: dict) -> tuple[int, int]:
    """Original image size from the stored size and the intrinsics' scale (readers without a manifest)."""
    s = float(np.asarray(cam["K"])[0, 0] / np.asarray(cam["K_orig"])[0, 0])
    return int(round(stored_wh[0] / s)), int(round(stored_wh[1] / s))


def _assemble(reader, opts, names, images, cov_rows, hist2d, unlabelled_sem, depth_hist,
              gt_hist, gt_hist_cam, has_dyn, dyn_cls, dyn_cam, rows_cam) -> dict:
    """Turn the raw counts into the qa.json structure (summary, per camera, per scene, lists)."""
    vocab = getattr(reader, "vocabulary", None) or default_vocabulary()
    cls_names = vocab.names
    lab = np.array([r["labelled"] for r in images], np.float64)
    sem = np.array([r["semantic"] for r in images], np.float64)
    dark = [r for r in images if r["mean_luma"] < opts.dark_luma]
    few = [r for r in images if r["labelled"] < opts.few_labels]
    n_img = len(images)
    summary: dict = {
        "samples": len(reader), "images": n_img,
        "labelled_pixels_per_image": float(lab.mean()) if n_img else 0.0,
        "labelled_pixels_per_image_min": float(lab.min()) if n_img else 0.0,
        "semantic_pixels_per_image": float(sem.mean()) if n_img else 0.0,
        "semantic_share": share(sem.sum(), lab.sum()),
        "dark_images": len(dark), "few_label_images": len(few),
        "bright_image_share": share(n_img - len(dark), n_img),
        "well_labelled_image_share": share(n_img - len(few), n_img),
        "semantic_classes_present": int((hist2d > 0).sum()),
    }
    sweeps = camera_sweeps_section(reader, len(names))
    if sweeps is not None:
        summary.update(sweep_frames=sweeps["frames"], sweep_frames_per_sample=sweeps["frames_per_sample"],
                       sweep_labelled_pixels_per_image=sweeps["labelled_pixels_per_image"])
    summary.update({k: None for k in SUMMARY_KEYS if k not in summary})
    if has_dyn:
        summary["dynamic_share"] = share(dyn_cam.sum(), rows_cam.sum())
    coverage = None
    if cov_rows:
        tot = defaultdict(int)
        for r in cov_rows:
            for k, v in r.items():
                if isinstance(v, int) and k != "sample":
                    tot[k] += v
        summary["aux_rays_per_sample"] = tot["aux_rays"] / len(cov_rows)
        summary["key_rays_ending_in_grid_share"] = share(tot["key_rays_ending_inside"], tot["key_rays"])
        summary["grid_voxels_crossed_share"] = share(tot["voxels_crossed_all"], tot["grid_voxels"])
        if "gt_occupied" in tot:
            summary["gt_occupied_crossed_share"] = share(tot["gt_occupied_crossed_all"],
                                                          tot["gt_occupied"])
            summary["gt_occupied_crossed_share_key"] = share(tot["gt_occupied_crossed_key"],
                                                              tot["gt_occupied"])
            summary["gt_camera_voxels_crossed_share"] = share(tot["gt_camera_crossed_all"],
                                                               tot["gt_camera"])
        coverage = {"per_sample": cov_rows, "totals": dict(tot), "ray_stride": opts.ray_stride,
                    "note": "voxels crossed by a label ray between the camera and its LiDAR return "
                            "(end voxel included); auxiliary rays on dynamic labels are excluded"}
    per_camera = {}
    for c, name in enumerate(names):
        rows = [r for r in images if r["camera"] == name]
        lc = np.array([r["labelled"] for r in rows], np.float64)
        per_camera[name] = {
            "images": len(rows),
            "labelled_pixels_mean": float(lc.mean()) if len(rows) else 0.0,
            "labelled_pixels_min": float(lc.min()) if len(rows) else 0.0,
            "semantic_pixels_mean": float(np.mean([r["semantic"] for r in rows])) if rows else 0.0,
            "mean_luma": float(np.mean([r["mean_luma"] for r in rows])) if rows else 0.0,
            "dark_images": sum(r in dark for r in rows),
            "few_label_images": sum(r["labelled"] < opts.few_labels for r in rows),
            "dynamic_share": share(dyn_cam[c], rows_cam[c]) if has_dyn else None,
        }
    per_scene = []
    for scene in dict.fromkeys(r["scene"] for r in images):
        rows = [r for r in images if r["scene"] == scene]
        cov = [r for r in cov_rows if r["scene"] == scene]
        occ = sum(r.get("gt_occupied", 0) for r in cov)
        per_scene.append({
            "scene": scene, "samples": len({r["sample"] for r in rows}), "images": len(rows),
            "labelled_pixels_per_image": float(np.mean([r["labelled"] for r in rows])),
            "semantic_pixels_per_image": float(np.mean([r["semantic"] for r in rows])),
            "mean_luma": float(np.mean([r["mean_luma"] for r in rows])),
            "dark_images": sum(r["mean_luma"] < opts.dark_luma for r in rows),
            "few_label_images": sum(r["labelled"] < opts.few_labels for r in rows),
            "gt_occupied_crossed_share": share(sum(r.get("gt_occupied_crossed_all", 0) for r in cov),
                                                occ),
        })
    has_gt = bool(gt_hist.sum())
    return {
        "summary": summary,
        "store": {"cameras": names, "image_size": list(reader.image_size), "grid": reader.grid.to_record(),
                  "has_semantics": bool(getattr(reader, "has_semantics", True)),
                  "has_occ_gt": has_gt, "has_motion_masks": has_dyn},
        "options": {"dark_luma": opts.dark_luma, "few_labels": opts.few_labels,
                    "coverage": opts.coverage, "ray_stride": opts.ray_stride,
                    "outlier_threshold": opts.outlier_threshold, "outlier_neighbours": opts.outlier_neighbours,
                    "dropout_reach": opts.dropout_reach},
        "classes": {"vocabulary": vocab.name, "names": cls_names, "colors": [list(c) for c in vocab.colors]},
        "class_histogram_2d": {cls_names[k]: int(v) for k, v in enumerate(hist2d)},
        "unlabelled_semantic_pixels": int(unlabelled_sem),
        "class_histogram_gt": ({cls_names[k]: int(v) for k, v in enumerate(gt_hist)}
                               if has_gt else None),
        "class_histogram_gt_camera": ({cls_names[k]: int(v) for k, v in enumerate(gt_hist_cam)}
                                      if has_gt else None),
        "depth_histogram": {"edges_m": DEPTH_EDGES.tolist(), "counts": depth_hist.sum(0).tolist(),
                            "per_camera": {n: depth_hist[c].tolist() for c, n in enumerate(names)}},
        "dynamic": ({"per_class": {cls_names[k]: share(dyn_cls[k], hist2d[k])
                                   for k in range(len(hist2d))},
                     "per_camera": {n: share(dyn_cam[c], rows_cam[c]) for c, n in enumerate(names)}}
                    if has_dyn else None),
        "coverage": coverage,
        "camera_sweeps": sweeps,
        "per_camera": per_camera,
        "per_scene": per_scene,
        "dark_images": dark,
        "few_label_images": few,
        "images": images,
    }


def camera_sweeps_section(reader, n_cams: int) -> dict | None:
    """qa.json's `camera_sweeps`: how many unlabelled camera frames the store holds beside its
    keyframes and how densely their depth rays label them (None: a store without camera sweeps)."""
    info = layout.camera_sweeps(getattr(reader, "manifest", None) or {})
    if info is None:
        return None
    frames, rays = int(info["count"]), int(info["num_rays"])
    return {"frames": frames, "per_sample_max": int(info["per_sample"]), "rays": rays,
            "frames_per_sample": share(frames, len(reader)),
            "labelled_pixels_per_image": share(rays, frames * n_cams),
            "dropped": info.get("dropped", {}), "skipped": len(info.get("skipped", [])),
            "motion_masks": bool(info.get("motion_masks"))}


def numeric_summary(report: dict) -> dict[str, float]:
    """The summary scalars `--fail-under` can check (None values are left out)."""
    return {k: float(v) for k, v in report["summary"].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def unavailable_reason(key: str, report: dict) -> str:
    """Why a known summary key has no value for this store (for one clear failure line)."""
    if key == "dynamic_share":
        return "the store has no motion masks (run renderocc prep motion-masks)"
    if key.startswith("fit_"):
        return "no fit in this report (run qa with --fit N)"
    if key.startswith("sweep_"):
        return "the store has no camera sweeps (prep nuscenes --camera-sweeps N)"
    if not report["options"]["coverage"]:
        return "coverage was skipped (--no-coverage)"
    if key.startswith("gt_"):
        return "the store has no Occ3D GT"
    return "the store has no data for it"


def check_fail_under(report: dict, thresholds: dict[str, float]) -> list[str]:
    """One message per threshold the report falls below; unknown keys raise KeyError."""
    values = numeric_summary(report)
    failures = []
    for key, limit in thresholds.items():
        if key not in values:
            raise KeyError(key)
        if values[key] < limit:
            failures.append(f"{key} = {values[key]:.6g} is below {limit:g}")
    return failures
