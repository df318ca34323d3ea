"""`renderocc qa`: the label-coverage report of a ray store, with thresholds for pipelines."""

from __future__ import annotations

import json
import math

import click
import numpy as np

from renderocc.errors import UserError
from renderocc.eval.common import clean_json, open_store
from renderocc.fit.commands import DEFAULT_LR, build_fit_config
from renderocc.fit.fit import fit_store
from renderocc.options import FiniteFloat, quiet_option
from renderocc.outputs import prepare_out_dir, write_atomic
from renderocc.qa.html import depth_label_pictures, render_html, thumbnails
from renderocc.qa.parts import run_part
from renderocc.qa.report import (
    SUMMARY_KEYS,
    QAOptions,
    check_fail_under,
    collect,
    unavailable_reason,
)
from renderocc.shards import resolve_shard


def parse_thresholds(items: tuple[str, ...]) -> dict[str, float]:
    """`key=value` strings → {key: float}; malformed ones are a UserError."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(value)
            if not math.isfinite(out[key.strip()]):  # NaN: a gate that always passes
                raise ValueError
        except ValueError:
            raise UserError(f"--fail-under expects key=finite number, got {item!r}") from None
    return out


@click.command("qa")
@click.option("--store", "store", required=True, help="Ray store path or URL.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory for qa.html and qa.json.")
@click.option("--fail-under", "fail_under", multiple=True, metavar="KEY=VALUE",
              help="Exit 1 when summary KEY is below VALUE (repeatable), e.g. "
                   "labelled_pixels_per_image=500. Keys: the `summary` of qa.json.")
@click.option("--dark-luma", default=30.0, show_default=True, type=FiniteFloat(),
              help="Mean luma flagging a dark image.")
@click.option("--few-labels", default=100, show_default=True,
              help="Labelled pixels below which an image is flagged.")
@click.option("--no-coverage", is_flag=True, help="Skip the ray march over the voxel grid.")
@click.option("--outlier-threshold", default=0.1, show_default=True, type=FiniteFloat(min=0.0, min_open=True),
              help="Relative depth residual (vs the plane fitted to its image-space neighbours) flagging a "
                   "depth outlier.")
@click.option("--dropout-reach", default=40.0, show_default=True, type=FiniteFloat(min=0.0, min_open=True),
              help="Metres: image cells whose centre ray meets the ground within this count for LiDAR drop-outs "
                   "(needs 2D masks).")
@click.option("--ray-stride", default=1, show_default=True, type=click.IntRange(min=1),
              help="Use every n-th label ray in the coverage march (faster on big stores).")
@click.option("--fit", "fit_n", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also fit a free voxel grid (`renderocc fit`) on N evenly spaced samples and report "
                   "per-class IoU beside label coverage (needs Occ3D GT).")
@click.option("--fit-iters", default=40, show_default=True, type=click.IntRange(min=1),
              help="Iterations per sample of the --fit grids (fewer than `renderocc fit`'s default: a QA pass).")
@click.option("--shard-index", default=None, type=int,
              help="Run part i of --num-shards (samples split in blocks) and write OUT/parts/; the job "
                   "completing the set writes the report. Default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX "
                   "when set, else 0 (docs/scale-out.md).")
@click.option("--num-shards", default=None, type=int,
              help="Number of QA jobs. Default: SLURM_ARRAY_TASK_COUNT or RENDEROCC_NUM_SHARDS when set, else 1.")
@quiet_option
def qa(store: str, out: str, fail_under: tuple[str, ...], dark_luma: float, few_labels: int,
       no_coverage: bool, outlier_threshold: float, dropout_reach: float, ray_stride: int, fit_n: int,
       fit_iters: int, shard_index: int | None,
       num_shards: int | None, quiet: bool) -> None:
    """Label-coverage report of a ray store: OUT/qa.html (self-contained) and OUT/qa.json.

    \b
    Example:
      renderocc qa --store store --out qa --fail-under labelled_pixels_per_image=500
      renderocc qa --store store --out qa --fit 3   (adds what a free grid recovers per class)
    """
    thresholds = parse_thresholds(fail_under)
    for key in thresholds:  # before the (long) pass over the store
        if key not in SUMMARY_KEYS:
            raise UserError(f"unknown --fail-under key {key!r}; known: {', '.join(SUMMARY_KEYS)}")
    out_dir = prepare_out_dir(out)
    reader = open_store(store)
    if fit_n and not reader.has_occ_gt:
        raise UserError("--fit: the store has no Occ3D GT (occ_gt) to score the fit against")
    opts = QAOptions(dark_luma=dark_luma, few_labels=few_labels, coverage=not no_coverage, ray_stride=ray_stride,
                     outlier_threshold=outlier_threshold, dropout_reach=dropout_reach)
    shard = resolve_shard(shard_index, num_shards)
    if shard.count == 1:
        report = collect(reader, opts, progress=not quiet)
    else:
        report, done = run_part(reader, opts, shard, out_dir, progress=not quiet)
        click.echo(f"qa: {shard.describe()}: wrote {out_dir / 'parts'} ({done} of {shard.count} parts in)", err=True)
        if report is None:
            click.echo("qa: the report is written by the job that completes the set of parts")
            return
    report["skipped_samples"] = getattr(reader, "manifest", {}).get("skipped_samples", [])   # prep left out
    if fit_n:
        report["fit"] = fit_section(reader, fit_n, fit_iters, progress=not quiet)
        report["summary"].update(fit_miou=report["fit"]["miou"], fit_geometry_iou=report["fit"]["geometry_iou"],
                                 fit_label_coverage=report["fit"]["label_coverage"])
    missing = [k for k in thresholds if report["summary"][k] is None]
    failures = [f"{k} is not available: {unavailable_reason(k, report)}" for k in missing]
    failures += check_fail_under(report, {k: v for k, v in thresholds.items() if k not in missing})
    report["fail_under"] = {"thresholds": thresholds, "failures": failures}
    write_atomic(out_dir / "qa.json", json.dumps(clean_json(report), indent=1))
    write_atomic(out_dir / "qa.html", render_html(report, f"renderocc QA: {store}",
                                                  failures if thresholds else None,
                                                  thumbnails(reader, report), depth_label_pictures(reader, report)))
    s = report["summary"]
    click.echo(f"{s['samples']} samples, {s['images']} images: "
               f"{s['labelled_pixels_per_image']:.0f} labelled pixels/image, "
               f"{s['dark_images']} dark, {s['few_label_images']} with few labels")
    if report.get("camera_sweeps") is not None:
        cs = report["camera_sweeps"]
        click.echo(f"camera sweeps: {cs['frames']} frames ({cs['frames_per_sample'] or 0:.2f} per sample), "
                   f"{cs['labelled_pixels_per_image'] or 0:.0f} labelled pixels/image (depth only)")
    if report["skipped_samples"]:
        sk = report["skipped_samples"]
        click.echo(f"prep skipped {len(sk)} bad sample(s) (listed in qa.json), first: {sk[0]['sample_token']} "
                   f"({sk[0]['reason']})")
    for cond, row in report["depth_labels"]["per_condition"].items():
        extra = "" if row.get("dropout_share") is None else \
            (f", drop-out {100 * row['dropout_share']:.1f}%, "
             f"mask disagreement {100 * (row['mask_disagreement_rate'] or 0):.1f}%")
        click.echo(f"  {cond}: {row['images']} images, {row['labels_per_mpx']:.0f} labels/Mpx, depth outliers "
                   f"{100 * (row['depth_outlier_rate'] or 0):.1f}%{extra}")
    click.echo(f"wrote {out_dir / 'qa.html'} and {out_dir / 'qa.json'}")
    if fit_n:
        f = report["fit"]
        click.echo(f"fit: {len(f['samples'])} samples x {f['iters']} iterations: mIoU {100 * (f['miou'] or 0):.2f}, "
                   f"geometry IoU {100 * (f['geometry_iou'] or 0):.2f}, label coverage "
                   f"{100 * (f['label_coverage'] or 0):.2f} (%)")
    if failures:
        raise click.ClickException("; ".join(f"fail-under: {f}" for f in failures))


def fit_section(reader, n: int, iters: int, progress: bool = True) -> dict:
    """qa.json's `fit`: `renderocc fit` (default settings) on n evenly spaced samples, per class."""
    idx = sorted({int(round(x)) for x in np.linspace(0, len(reader) - 1, min(n, len(reader)))})
    cfg = build_fit_config(reader.grid, "demo", [])
    m = fit_store(reader, idx, cfg, iters=iters, lr=DEFAULT_LR, out=None, progress=progress)
    per_class = [{"class": name, "iou": m["iou_per_class"][name], "iou_all_voxels": m["iou_per_class_nomask"][name],
                  "label_coverage": m["label_coverage_per_class"][name]} for name in reader.vocabulary.classes]
    return {"samples": idx, "iters": iters, "supervision": m["supervision"], "aux_frames": m["aux_frames"],
            "miou": m["miou"], "geometry_iou": m["geometry_iou"], "label_coverage": m["label_coverage"],
            "per_class": per_class, "thresholds": m["thresholds"], "config_digest": m["config_digest"],
            "wall_s": m["wall_s"],
            "note": "free per-voxel density and semantics fitted to each sample's key + auxiliary label rays "
                    "with the training losses (renderocc fit); IoU inside mask_camera; label coverage = share "
                    "of GT-occupied mask_camera voxels holding or bordering a label-ray end point"}
