"""`renderocc eval`: Occ3D metrics on the store's GT and rendered 2D metrics on its labels.

The checkpoint's supervision contract is written next to every number, because a model
trained with dense 3D labels inside `mask_camera` scores higher under the masked metric
than one trained from 2D labels alone, and the two must never be compared unlabelled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from renderocc.classes import IGNORE, OCC3D_CLASSES
from renderocc.errors import UserError
from renderocc.eval import external, infer
from renderocc.eval.common import clean_json, open_store
from renderocc.eval.external import load_prediction, origins_by_token, scene_poses_from_store
from renderocc.eval.metrics import DepthMetrics, FloaterMetrics, OccMetrics, Sem2DMetrics
from renderocc.eval.rayiou import RayIoU
from renderocc.eval.tta import TTA_TEXT
from renderocc.geometry import OCC3D_GRID, Grid, ends_inside
from renderocc.outputs import prepare_out_dir, write_atomic

SUPERVISION_TEXT = {
    "2d": "2D rendering supervision only (projected LiDAR depth + {semantics}); no 3D labels, "
          "no mask_camera in training",
    "lidar-sparse": "2D rendering ({semantics}) + sparse 3D voxel labels from the keyframe LiDAR points; "
                    "no dense GT",
    "3d": "dense Occ3D GT {where} (3D supervision{inflated})",
    "mixed": "2D rendering ({semantics}) + dense Occ3D GT {where}{inflated_mixed}",
}
MASK_TEXT = {"camera": "inside mask_camera", "lidar": "inside mask_lidar", "none": "on all voxels"}
SEMANTIC_TEXT = {"lidarseg": "lidarseg labels", "masks": "dense 2D mask classes (no lidarseg)",
                 "both": "lidarseg labels + dense 2D mask classes", "none": "no semantic labels"}


def describe_supervision(ckpt: dict) -> str:
    """The contract line every report carries; for 3d / mixed it names the GT mask of the voxel
    loss (`loss.occ3d_mask`), because training inside mask_camera inflates the masked mIoU."""
    sup = str(ckpt.get("supervision", "unknown"))
    text = SUPERVISION_TEXT.get(sup, "not stated by the checkpoint")
    source = ckpt.get("semantic_source") or "lidarseg"  # checkpoints before masks: lidarseg
    text = text.replace("{semantics}", SEMANTIC_TEXT.get(source, source))
    if sup in ("3d", "mixed"):
        mask = occ3d_mask_of(ckpt)
        inflated = mask == "camera"
        text = text.format(where=MASK_TEXT[mask],
                           inflated=": masked scores are inflated relative to 2D-only training" if inflated else "",
                           inflated_mixed=" (masked scores are inflated relative to 2D-only training)"
                           if inflated else "")
        sup = f"{sup} (occ3d_mask {mask})"
    return f"{sup}: {text}"


def occ3d_mask_of(ckpt: dict) -> str | None:
    """`loss.occ3d_mask` of a 3d / mixed checkpoint (camera for runs that predate the option)."""
    if ckpt.get("supervision") not in ("3d", "mixed"):
        return None
    return getattr(getattr(ckpt.get("config"), "loss", None), "occ3d_mask", "camera")


def select_samples(reader, split: tuple[str, ...], say=print) -> tuple[list[int], str]:
    """Sample indices for `--split`: `all`, `val` (nuScenes val / mini_val scenes), or scene names."""
    names = reader.scene_names()
    scenes, label = select_scenes(names, split, say)
    keep = set(scenes)
    return [i for i, n in enumerate(names) if n in keep], label


def select_scenes(names: list[str], split: tuple[str, ...], say=print) -> tuple[list[str], str]:
    """Scenes for `--split` among `names` (one per sample). `val` on data without any nuScenes val
    scene (a synthetic or custom dataset) means every scene, with a printed note."""
    present = list(dict.fromkeys(names))
    wanted = [s for item in split for s in item.split(",") if s.strip()]
    if not wanted or wanted == ["val"]:
        from nuscenes.utils.splits import create_splits_scenes

        sp = create_splits_scenes()
        val = set(sp["val"]) | set(sp["mini_val"])
        scenes = [s for s in present if s in val]
        label = "val"
        if not scenes:
            say(f"note: no scene of the nuScenes val split here (a synthetic or custom dataset?): "
                f"scoring all {len(present)} scene(s); --split SCENE[,SCENE...] picks some")
            scenes, label = present, "all (no nuScenes val scene)"
    elif wanted == ["all"]:
        scenes, label = present, "all"
    else:
        unknown = [s for s in wanted if s not in present]
        if unknown:
            raise UserError(f"--split: scene {unknown[0]!r} is not in the store "
                            f"(scenes: {', '.join(present[:10])}{' …' if len(present) > 10 else ''})")
        scenes, label = wanted, ",".join(wanted)
    return scenes, label


class VoxelScores:
    """The 3D scores of class grids, shared by checkpoint and external-prediction evaluation so the
    two agree by construction: Occ3D mIoU (with and without mask_camera), floaters, RayIoU."""

    def __init__(self, grid: Grid, origins: dict[str, np.ndarray] | None, names: list[str] | None = None):
        self.names = list(names or OCC3D_CLASSES)  # the vocabulary, free last
        self.occ, self.floaters = OccMetrics(len(self.names)), FloaterMetrics(free=len(self.names) - 1)
        self.z_centres = grid.axis_centres(2)
        self.origins = origins
        self.ray = RayIoU(grid, self.names) if origins is not None else None

    def update(self, pred: np.ndarray, gt: dict, token: str) -> None:
        """One sample: `pred` class grid on the GT grid; `gt` with semantics and mask_camera."""
        self.occ.update(pred, gt["semantics"], gt["mask_camera"])
        self.floaters.update(pred, gt["semantics"], self.z_centres, gt["mask_camera"])
        if self.ray is not None:
            self.ray.update(pred, gt["semantics"], self.origins[token])

    def results(self) -> dict:
        o, n = self.occ.compute(), self.occ.samples
        names = self.names
        out = {
            "miou": o["miou"] if n else None,
            "iou_per_class": dict(zip(names, o["iou_per_class"], strict=True)) if n else None,
            "geometry_iou": o["geometry_iou"] if n else None,
            "miou_nomask": o["miou_nomask"] if n else None,
            "iou_per_class_nomask": dict(zip(names, o["iou_per_class_nomask"], strict=True)) if n else None,
            "geometry_iou_nomask": o["geometry_iou_nomask"] if n else None,
            "occ_samples": n,
            "floaters_above_2m": self.floaters.compute() if n else None,
            "confusion_camera": o["confusion_camera"] if n else None,
        }
        ray = self.ray.compute() if self.ray is not None and self.ray.samples else {}
        for k in ("rayiou", "rayiou_1", "rayiou_2", "rayiou_4", "rayiou_per_class"):
            out[k] = ray.get(k)
        out["rayiou_rays"] = ray.get("rayiou_rays", 0)
        return out


PROTOCOL = {
    "occ3d": "18x18 confusion over voxels with mask_camera (and all voxels for *_nomask), one matrix "
             "for the dataset; GT 255 dropped; mIoU over classes 0-16, free counted in FP/FN",
    "rayiou": "SparseOcc: origins = the scene's keyframe LiDAR positions in the sample's ego frame with "
              "|x|,|y| < 39 m (8 at rounded linspace), 39 pitches x 360 azimuths per origin, first "
              "non-free voxel (distance where the ray leaves it), rays whose GT hit is free dropped, "
              "TP = same class and |dd| < tau; IoU per class over the dataset; mean over tau in {1,2,4} "
              "of the nanmean over classes 0-16; no camera mask",
    "floaters": "voxels predicted occupied and free in GT, centre z > 2 m (store grid); per sample, and as "
                "a share of the predicted-occupied voxels above 2 m",
}


def store_origins(reader) -> dict[str, np.ndarray]:
    """RayIoU origins of every store sample, from the store's poses."""
    return origins_by_token(scene_poses_from_store(reader))


def evaluate(reader, model, ckpt: dict, indices: list[int], *, rays_per_sample: int = 0,
             progress: bool = True, rayiou: bool = True, tta: str = "none",
             origins: dict[str, np.ndarray] | None = None) -> dict:
    """All metrics over `indices`; returns the metrics.json dict (without the run metadata).
    `origins`: the RayIoU origins (`store_origins`) when the caller already has them."""
    cfg = ckpt["config"]
    grid = infer.model_grid(ckpt, reader.grid)
    scoring = infer.scoring_of(ckpt, reader.grid)
    step = cfg.render.step
    thr = infer.threshold_of(ckpt)
    vocab = reader.vocabulary
    depth, sem2d = DepthMetrics(), Sem2DMetrics(vocab.num_semantic)
    if rayiou and reader.has_occ_gt and origins is None:
        origins = store_origins(reader)
    voxels = VoxelScores(reader.grid, origins if rayiou and reader.has_occ_gt else None, vocab.names)
    for i in tqdm(indices, desc="eval", unit="sample", disable=not progress):
        density, logits = infer.run_model(model, reader, i, cfg, tta=tta)
        s = reader.sample(i)
        gt = reader.occ_gt(i) if reader.has_occ_gt else None
        if gt is not None:
            pred = infer.classify_on_labels(density, logits, thr, scoring)
            voxels.update(pred, gt, s["sample_token"])
        lab = reader.labels(i)
        rays = infer.label_rays(reader, i, s, lab)
        dist = np.asarray(lab["depth"], np.float64) * rays["scale"]
        keep = np.flatnonzero(ends_inside(rays["origins"], rays["directions"], dist, grid))
        if rays_per_sample and len(keep) > rays_per_sample:
            keep = keep[np.linspace(0, len(keep) - 1, rays_per_sample).astype(np.int64)]
        if not len(keep):
            continue
        r = infer.render(density, logits, rays["origins"][keep], rays["directions"][keep], grid, step)
        depth.update(r["depth"] / rays["scale"][keep], np.asarray(lab["depth"])[keep])
        label = np.asarray(lab["label"])[keep]
        ok = label != IGNORE
        sem2d.update(r["semantics"][ok].argmax(-1), label[ok])
    out = voxels.results()
    out.update(depth.compute())
    sm = sem2d.compute()
    out["sem2d_miou"] = sm["sem2d_miou"]
    out["sem2d_iou_per_class"] = dict(zip(vocab.classes, sm["sem2d_iou_per_class"], strict=True))
    out["classes"] = {"vocabulary": vocab.name, "names": vocab.names}
    out["sem2d_pixels"] = sm["sem2d_pixels"]
    out["tta"] = TTA_TEXT[tta]
    out["protocol"] = {
        **PROTOCOL,
        "prediction": "argmax class where density > the checkpoint threshold "
                      f"({thr:g}), free elsewhere; a coarser model grid repeated onto the GT grid, a finer "
                      "one's density and logits interpolated at the GT voxel centres",
        "grid": grid.to_record(), "scoring": scoring.mode, "render_step": step,
        "2d": "key-frame label rays ending inside the grid; rendered distance (unstopped mass at "
              "the box exit) converted to camera z; semantics = argmax of rendered logits",
        "rays_per_sample": rays_per_sample or "all",
    }
    return out


def evaluate_predictions(preds: dict[str, Path], tokens: list[str], gt_of, origins: dict | None, *,
                         shape: tuple[int, ...], grid: Grid, allow_missing: bool = False,
                         progress: bool = True, names: list[str] | None = None) -> dict:
    """Occ3D mIoU / RayIoU of prediction files for `tokens`; `gt_of(token)` gives the GT dict.

    Missing predictions stop the run before anything is scored, unless `allow_missing` (then they
    are counted and listed). 2D metrics need a model and are None."""
    missing = [t for t in tokens if t not in preds]
    if missing and not allow_missing:
        raise UserError(f"--pred: {len(missing)} of {len(tokens)} samples have no prediction "
                        f"(first: {missing[0]}); --allow-missing scores the others")
    voxels = VoxelScores(grid, origins, names)
    scored = [t for t in tokens if t in preds]
    for tok in tqdm(scored, desc="eval", unit="sample", disable=not progress):
        pred = load_prediction(preds[tok], shape)
        voxels.update(pred, gt_of(tok), tok)
    out = voxels.results()
    nan = float("nan")
    out.update(depth_abs_rel=nan, depth_rmse=nan, depth_delta1=nan, depth_pixels=0,
               sem2d_miou=nan, sem2d_iou_per_class=None, sem2d_pixels=0)
    out["missing"] = missing
    out["extra_predictions"] = len(set(preds) - set(tokens))
    out["protocol"] = {**PROTOCOL, "prediction": "the class grids in the prediction files, as given",
                       "grid": grid.to_record(), "2d": "not available: no model to render"}
    return out


def _range_m(row: dict) -> str:
    return f"{row['from_m']:g}–{row['to_m']:g} m" if row["to_m"] is not None else f"≥ {row['from_m']:g} m"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v * 100:.2f}" if isinstance(v, float) else str(v)


def markdown(m: dict) -> str:
    """A Markdown summary: headline table, per-class IoU, and the supervision contract."""
    info = m.get("threshold_info") or {}
    source = (f"- checkpoint: `{m['checkpoint']}` (step {m.get('checkpoint_step', '?')})" if m.get("checkpoint")
              else f"- predictions: `{m['predictions']}`")
    lines = [
        "# renderocc evaluation", "", source,
        f"- supervision: **{m['supervision']}**",
        f"- split: {m['split']} ({m['samples']} samples, {m['occ_samples']} with Occ3D GT)",
    ]
    if m.get("threshold") is not None:
        lines.append(f"- occupancy threshold: density > {m['threshold']:.4g}"
                     f" ({info.get('how', 'how it was chosen is not recorded')}; {info.get('metric', '')})")
    if m.get("tta"):
        lines.append(f"- test-time augmentation: {m['tta']}")
    if m.get("missing"):
        lines.append(f"- missing predictions: {len(m['missing'])} (not scored): "
                     + ", ".join(f"`{t}`" for t in m["missing"][:20]) + (" …" if len(m["missing"]) > 20 else ""))
    last = len(m.get("iou_per_class") or OCC3D_CLASSES) - 2  # the last semantic class id
    lines += [
        "", "| metric | with mask_camera | all voxels |", "|---|---:|---:|",
        f"| mIoU (classes 0–{last}) | {_fmt(m['miou'])} | {_fmt(m['miou_nomask'])} |",
        f"| geometry IoU | {_fmt(m['geometry_iou'])} | {_fmt(m['geometry_iou_nomask'])} |",
        *_floater_rows(m.get("floaters_above_2m")), "",
    ]
    if m.get("rayiou") is not None:
        lines += ["| RayIoU (no mask) | @1 m | @2 m | @4 m | mean |", "|---|---:|---:|---:|---:|",
                  f"| classes 0–{last} | {_fmt(m['rayiou_1'])} | {_fmt(m['rayiou_2'])} | {_fmt(m['rayiou_4'])} "
                  f"| {_fmt(m['rayiou'])} |", ""]
    if m.get("depth_pixels"):
        lines += [
            "| 2D metric | value |", "|---|---:|",
            f"| depth AbsRel | {_num(m['depth_abs_rel'])} |",
            f"| depth RMSE (m) | {_num(m['depth_rmse'])} |",
            f"| depth δ<1.25 (%) | {_fmt(m['depth_delta1'])} |",
            f"| 2D semantic mIoU (%) | {_fmt(m['sem2d_miou'])} |", "",
        ]
        rows = [r for r in m.get("depth_by_distance") or [] if r["pixels"]]
        if rows:
            lines += ["| labelled depth | pixels | AbsRel | rendered / labelled (geometric mean) |",
                      "|---|---:|---:|---:|"]
            lines += [f"| {_range_m(r)} | {r['pixels']} | {_num(r['abs_rel'])} | {r['ratio']:.2f} |" for r in rows]
            lines += [""]
    if not m["occ_samples"]:
        lines += ["No Occ3D GT in the evaluated samples: 3D metrics are not available.", ""]
    if m.get("checkpoint") and not m["sem2d_pixels"]:
        lines += ["No semantic labels in the evaluated samples: 2D semantic mIoU is not available.", ""]
    if m["iou_per_class"]:
        ray = m.get("rayiou_per_class") or {}
        lines += ["| class | IoU (mask) | IoU (all) | RayIoU @1/@2/@4 |", "|---|---:|---:|---:|"]
        for name, v in m["iou_per_class"].items():
            r = ray.get(name)
            rtxt = " / ".join(_fmt(r[k]) for k in ("1", "2", "4")) if r else "–"
            lines.append(f"| {name} | {_fmt(v)} | {_fmt(m['iou_per_class_nomask'][name])} | {rtxt} |")
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


def write_metrics(m: dict, out: str) -> None:
    """metrics.json and metrics.md, each written to a temporary name and renamed."""
    d = prepare_out_dir(out)
    write_atomic(d / "metrics.json", json.dumps(clean_json(m), indent=1))
    write_atomic(d / "metrics.md", markdown(m))


def run(store: str, ckpt_path: str, out: str, split: tuple[str, ...], rays_per_sample: int,
        progress: bool, device: str | None = "cpu", rayiou: bool = True, tta: str = "none",
        say=print) -> dict:
    """The `eval --ckpt` body: open, evaluate, write metrics.json and metrics.md."""
    prepare_out_dir(out)  # before the work: an unwritable --out is found at once
    reader = open_store(store)
    model, ckpt = infer.load_checkpoint_model(ckpt_path, device, reader)  # a bad checkpoint: its line first
    indices, label = select_samples(reader, split, say)
    m = evaluate(reader, model, ckpt, indices, rays_per_sample=rays_per_sample, progress=progress,
                 rayiou=rayiou, tta=tta)
    m.update(checkpoint=str(ckpt_path), checkpoint_step=ckpt.get("step"),
             supervision=describe_supervision(ckpt), supervision_mode=ckpt.get("supervision"),
             semantic_source=ckpt.get("semantic_source"),
             occ3d_mask=occ3d_mask_of(ckpt), threshold=infer.threshold_of(ckpt),
             threshold_info=ckpt.get("threshold_info"),
             split=label, samples=len(indices), store=str(store))
    write_metrics(m, out)
    return m


def run_predictions(pred_dir: str, out: str, split: tuple[str, ...], *, store: str | None = None,
                    gt_dir: str | None = None, dataroot: str | None = None, allow_missing: bool = False,
                    rayiou: bool = True, progress: bool = True, say=print) -> dict:
    """The `eval --pred` body: GT from a store or an Occ3D gts/ directory, the same metrics files."""
    prepare_out_dir(out)

    preds = external.find_predictions(pred_dir)
    if store is not None:
        reader = open_store(store)
        if not reader.has_occ_gt:
            raise UserError(f"store {store} has no Occ3D GT to score predictions against (prep with --occ-gt)")
        indices, label = select_samples(reader, split, say)
        indices = [i for i in indices if reader.occ_gt(i) is not None]
        tokens = [reader.sample(i)["sample_token"] for i in indices]
        grid, gt_of = reader.grid, (lambda t: reader.occ_gt(reader.index_of(t)))
        names = reader.vocabulary.names
        origins = store_origins(reader) if rayiou else None
    else:
        gts = external.GtDir(gt_dir)
        scenes, label = select_scenes(gts.scenes, split, say)
        keep = set(scenes)
        tokens = [t for t, sc in zip(gts.tokens, gts.scenes, strict=True) if sc in keep]
        grid, gt_of = OCC3D_GRID, gts.occ_gt
        names = None
        origins = None
        if rayiou and dataroot:
            origins = external.origins_by_token(external.scene_poses_from_dataroot(dataroot))
            lost = [t for t in tokens if t not in origins]
            if lost:
                raise UserError(f"--dataroot {dataroot}: no pose for sample {lost[0]} of --gt")
        elif rayiou:
            say("note: RayIoU needs poses: give --dataroot (nuScenes) with --gt, or use --store")
    shape = grid.shape
    m = evaluate_predictions(preds, tokens, gt_of, origins, shape=shape, grid=grid,
                             allow_missing=allow_missing, progress=progress, names=names)
    stated = _stated_supervision(Path(pred_dir))
    m.update(predictions=str(pred_dir), supervision=stated or "external predictions",
             supervision_mode=None, threshold=None, split=label,
             samples=len(tokens) - len(m["missing"]), store=str(store) if store else None,
             gt=str(gt_dir) if gt_dir else None, tta=None)
    if stated:
        info = json.loads((Path(pred_dir) / "predict.json").read_text())
        m.update(checkpoint_of_predictions=info.get("checkpoint"), tta=info.get("tta"))
    write_metrics(m, out)
    return m


def _stated_supervision(pred_dir: Path) -> str | None:
    """The supervision line `renderocc predict` wrote into DIR/predict.json, if any (plain JSON)."""
    p = pred_dir / "predict.json"
    if not p.is_file():
        return None
    try:
        sup = json.loads(p.read_text()).get("supervision")
    except (OSError, ValueError, AttributeError):
        return None
    return f"{sup} (from predict.json)" if isinstance(sup, str) else None
