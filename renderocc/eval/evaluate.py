"""`renderocc eval`: Occ3D metrics on the store's GT and rendered 2D metrics on its labels.

The checkpoint's supervision contract is written next to every number, because a model
trained with dense 3D labels inside `mask_camera` scores higher under the masked metric
than one trained from 2D labels alone, and the two must never be compared unlabelled.
"""

from __future__ import annotations

import math

import numpy as np
from tqdm import tqdm

from renderocc.classes import IGNORE, NUM_SEMANTIC, OCC3D_CLASSES
from renderocc.errors import UserError
from renderocc.eval import infer
from renderocc.eval.metrics import DepthMetrics, FloaterMetrics, OccMetrics, Sem2DMetrics
from renderocc.outputs import prepare_out_dir, write_atomic
from renderocc.raygrid import ends_inside

SUPERVISION_TEXT = {
    "2d": "2D rendering supervision only (projected LiDAR depth + lidarseg labels); no 3D labels, "
          "no mask_camera in training",
    "lidar-sparse": "2D rendering + sparse 3D voxel labels from the keyframe LiDAR points; no dense GT",
    "3d": "dense Occ3D GT inside mask_camera (3D supervision: masked scores are inflated relative "
          "to 2D-only training)",
    "mixed": "2D rendering + dense Occ3D GT inside mask_camera (masked scores are inflated relative "
             "to 2D-only training)",
}


def describe_supervision(ckpt: dict) -> str:
    sup = str(ckpt.get("supervision", "unknown"))
    return f"{sup}: {SUPERVISION_TEXT.get(sup, 'not stated by the checkpoint')}"


def select_samples(reader, split: tuple[str, ...]) -> tuple[list[int], str]:
    """Sample indices for `--split`: `all`, `val` (nuScenes val / mini_val scenes), or scene names."""
    names = [reader.sample(i)["scene_name"] for i in range(len(reader))]
    present = list(dict.fromkeys(names))
    wanted = [s for item in split for s in item.split(",") if s.strip()]
    if not wanted or wanted == ["val"]:
        from nuscenes.utils.splits import create_splits_scenes

        sp = create_splits_scenes()
        val = set(sp["val"]) | set(sp["mini_val"])
        scenes = [s for s in present if s in val]
        if not scenes:
            raise UserError("no scene of the nuScenes val split in this store; "
                            "use --split all or --split SCENE[,SCENE...]")
        label = "val"
    elif wanted == ["all"]:
        scenes, label = present, "all"
    else:
        unknown = [s for s in wanted if s not in present]
        if unknown:
            raise UserError(f"--split: scene {unknown[0]!r} is not in the store "
                            f"(scenes: {', '.join(present[:10])}{' …' if len(present) > 10 else ''})")
        scenes, label = wanted, ",".join(wanted)
    keep = set(scenes)
    return [i for i, n in enumerate(names) if n in keep], label


def evaluate(reader, model, ckpt: dict, indices: list[int], *, rays_per_sample: int = 0,
             progress: bool = True) -> dict:
    """All metrics over `indices`; returns the metrics.json dict (without the run metadata)."""
    cfg = ckpt["config"]
    grid = infer.model_grid(ckpt, reader.grid)
    step = cfg.render.step
    thr = infer.threshold_of(ckpt)
    occ, depth, sem2d, floaters = OccMetrics(), DepthMetrics(), Sem2DMetrics(), FloaterMetrics()
    g = reader.grid
    z_centres = g["pc_range"][2] + (np.arange(g["shape"][2]) + 0.5) * g["voxel_size"][2]
    for i in tqdm(indices, desc="eval", unit="sample", disable=not progress):
        density, logits = infer.run_model(model, reader, i, cfg)
        gt = reader.occ_gt(i) if reader.has_occ_gt else None
        if gt is not None:
            pred = infer.to_shape(infer.classify(density, logits, thr), np.shape(gt["semantics"]))
            occ.update(pred, gt["semantics"], gt["mask_camera"])
            floaters.update(pred, gt["semantics"], z_centres, gt["mask_camera"])
        s = reader.sample(i)
        lab = reader.labels(i)
        rays = infer.label_rays(reader, i, s, lab)
        dist = np.asarray(lab["depth"], np.float64) * rays["scale"]
        keep = np.flatnonzero(ends_inside(rays["origins"], rays["dirs"], dist, grid))
        if rays_per_sample and len(keep) > rays_per_sample:
            keep = keep[np.linspace(0, len(keep) - 1, rays_per_sample).astype(np.int64)]
        if not len(keep):
            continue
        r = infer.render(density, logits, rays["origins"][keep], rays["dirs"][keep], grid, step)
        depth.update(r["depth"] / rays["scale"][keep], np.asarray(lab["depth"])[keep])
        label = np.asarray(lab["label"])[keep]
        ok = label != IGNORE
        sem2d.update(r["semantics"][ok].argmax(-1), label[ok])
    out = {}
    o = occ.compute()
    names = OCC3D_CLASSES
    out["miou"] = o["miou"] if occ.samples else None
    out["iou_per_class"] = dict(zip(names, o["iou_per_class"], strict=True)) if occ.samples else None
    out["geometry_iou"] = o["geometry_iou"] if occ.samples else None
    out["miou_nomask"] = o["miou_nomask"] if occ.samples else None
    out["iou_per_class_nomask"] = (dict(zip(names, o["iou_per_class_nomask"], strict=True))
                                   if occ.samples else None)
    out["geometry_iou_nomask"] = o["geometry_iou_nomask"] if occ.samples else None
    out["occ_samples"] = occ.samples
    out["floaters_above_2m"] = floaters.compute() if occ.samples else None
    out.update(depth.compute())
    sm = sem2d.compute()
    out["sem2d_miou"] = sm["sem2d_miou"]
    out["sem2d_iou_per_class"] = dict(zip(names[:NUM_SEMANTIC], sm["sem2d_iou_per_class"], strict=True))
    out["sem2d_pixels"] = sm["sem2d_pixels"]
    out["confusion_camera"] = o["confusion_camera"] if occ.samples else None
    out["protocol"] = {
        "occ3d": "18x18 confusion over voxels with mask_camera (and all voxels for *_nomask); "
                 "mIoU over classes 0-16, free counted in FP/FN; prediction = argmax class where "
                 f"density > {thr:g} (checkpoint threshold), free elsewhere",
        "grid": grid, "render_step": step,
        "2d": "key-frame label rays ending inside the grid; rendered distance (unstopped mass at "
              "the box exit) converted to camera z; semantics = argmax of rendered logits",
        "rays_per_sample": rays_per_sample or "all",
        "floaters": "voxels predicted occupied (as in occ3d) and free in GT, centre z > 2 m (store grid); "
                    "per sample, and as a share of the predicted-occupied voxels above 2 m",
    }
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v * 100:.2f}" if isinstance(v, float) else str(v)


def markdown(m: dict) -> str:
    """A Markdown summary: headline table, per-class IoU, and the supervision contract."""
    lines = [
        "# renderocc evaluation", "",
        f"- checkpoint: `{m['checkpoint']}` (step {m.get('checkpoint_step', '?')})",
        f"- supervision: **{m['supervision']}**",
        f"- split: {m['split']} ({m['samples']} samples, {m['occ_samples']} with Occ3D GT)",
        f"- occupancy threshold: density > {m['threshold']:.4g}"
        f" ({(m.get('threshold_info') or {}).get('how', 'how it was chosen is not recorded')}; "
        f"{(m.get('threshold_info') or {}).get('metric', '')})", "",
        "| metric | with mask_camera | all voxels |", "|---|---:|---:|",
        f"| mIoU (classes 0–16) | {_fmt(m['miou'])} | {_fmt(m['miou_nomask'])} |",
        f"| geometry IoU | {_fmt(m['geometry_iou'])} | {_fmt(m['geometry_iou_nomask'])} |",
        *_floater_rows(m.get("floaters_above_2m")), "",
        "| 2D metric | value |", "|---|---:|",
        f"| depth AbsRel | {_num(m['depth_abs_rel'])} |",
        f"| depth RMSE (m) | {_num(m['depth_rmse'])} |",
        f"| depth δ<1.25 (%) | {_fmt(m['depth_delta1'])} |",
        f"| 2D semantic mIoU (%) | {_fmt(m['sem2d_miou'])} |", "",
    ]
    if not m["occ_samples"]:
        lines += ["No Occ3D GT in the evaluated samples: 3D metrics are not available.", ""]
    if not m["sem2d_pixels"]:
        lines += ["No semantic labels in the evaluated samples: 2D semantic mIoU is not available.", ""]
    if m["iou_per_class"]:
        lines += ["| class | IoU (mask) | IoU (all) |", "|---|---:|---:|"]
        for name, v in m["iou_per_class"].items():
            lines.append(f"| {name} | {_fmt(v)} | {_fmt(m['iou_per_class_nomask'][name])} |")
        lines.append("")
    lines.append("IoU values in %. `–`: class absent from both GT and prediction (left out of the mean).")
    return "\n".join(lines) + "\n"


def _floater_rows(f: dict | None) -> list[str]:
    if not f:
        return []
    return [f"| floaters above 2 m (voxels/sample) | {f['per_sample_mask_camera']:.1f} | {f['per_sample']:.1f} |",
            f"| floaters / predicted occupied above 2 m (%) | {_fmt(f['share_of_predicted_mask_camera'])} "
            f"| {_fmt(f['share_of_predicted'])} |"]


def _num(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def run(store: str, ckpt_path: str, out: str, split: tuple[str, ...], rays_per_sample: int,
        progress: bool, device: str | None = "cpu") -> dict:
    """The `eval` command's body: open, evaluate, write metrics.json and metrics.md."""
    import json

    from renderocc.eval.common import clean_json, open_store

    d = prepare_out_dir(out)   # before the work: an unwritable --out is found at once
    reader = open_store(store)
    indices, label = select_samples(reader, split)
    model, ckpt = infer.load_checkpoint_model(ckpt_path, device)
    m = evaluate(reader, model, ckpt, indices, rays_per_sample=rays_per_sample, progress=progress)
    m.update(checkpoint=str(ckpt_path), checkpoint_step=ckpt.get("step"),
             supervision=describe_supervision(ckpt), supervision_mode=ckpt.get("supervision"),
             threshold=infer.threshold_of(ckpt), threshold_info=ckpt.get("threshold_info"),
             split=label, samples=len(indices),
             store=str(store))
    write_atomic(d / "metrics.json", json.dumps(clean_json(m), indent=1))
    write_atomic(d / "metrics.md", markdown(m))
    return m
