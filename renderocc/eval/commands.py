"""Click commands `renderocc eval | predict | viz`: parse, call, print. The work is elsewhere."""

from __future__ import annotations

import math

import click

from renderocc.errors import UserError
from renderocc.eval import evaluate as evaluation
from renderocc.eval import predict as prediction
from renderocc.eval import viz as figures
from renderocc.eval.tta import TTA_MODES, TTA_PASSES
from renderocc.options import FiniteFloat, device_option, quiet_option, resolve_device

SPLIT_DEFAULT = ("val",)  # eval, eval --pred and predict alike: predict writes what eval scores by default
SPLIT_HELP = ("Which samples: val (the store's nuScenes val/mini_val scenes; a store without any, e.g. synthetic "
              "or custom data, means all, with a note), all (every sample), or scene names (repeat or "
              "comma-separate).")


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _num(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


TTA_HELP = ("none; flip: average 2 passes (as is, images mirrored as in training); flip-bev: 4 passes "
            "(also the ego frame mirrored in x and in y, a flip training never makes); stated in the output.")


@click.command("eval")
@click.option("--store", default=None, help="Ray store path or URL: GT (and poses for RayIoU).")
@click.option("--ckpt", default=None, help="Checkpoint written by `renderocc train` (or use --pred).")
@click.option("--pred", "pred", default=None, type=click.Path(),
              help="Occ3D-format predictions of any model: DIR/<token>.npz (`semantics` or `pred`) or "
                   "DIR/<scene>/<token>/labels.npz, uint8 (200, 200, 16) [x, y, z].")
@click.option("--gt", "gt_dir", default=None, type=click.Path(),
              help="With --pred, instead of --store: an Occ3D gts/ directory (<scene>/<token>/labels.npz).")
@click.option("--dataroot", default=None, type=click.Path(),
              help="With --gt: nuScenes dataroot whose poses give the RayIoU origins.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for metrics.json and metrics.md.")
@click.option("--split", multiple=True, default=SPLIT_DEFAULT, show_default=True, help=SPLIT_HELP)
@click.option("--allow-missing", is_flag=True,
              help="With --pred: score the samples that have a prediction; count and list the others.")
@click.option("--rayiou/--no-rayiou", default=True, show_default=True, help="Compute RayIoU (SparseOcc).")
@click.option("--tta", type=click.Choice(list(TTA_MODES)), default="none", show_default=True,
              help="With --ckpt: test-time augmentation. " + TTA_HELP)
@click.option("--rays-per-sample", default=0, show_default=True, type=click.IntRange(min=0),
              help="Label rays rendered per sample for the 2D metrics (0 = all).")
@device_option
@quiet_option
def evaluate(store: str | None, ckpt: str | None, pred: str | None, gt_dir: str | None, dataroot: str | None,
             out: str, split: tuple[str, ...], allow_missing: bool, rayiou: bool, tta: str,
             rays_per_sample: int, device: str, quiet: bool) -> None:
    """Occ3D mIoU / geometry IoU / RayIoU on Occ3D GT, and rendered 2D metrics for checkpoints.

    \b
    Examples:
      renderocc eval --store store-val --ckpt run/last.pt --out eval --split all
      renderocc eval --pred preds --store store-val --out eval-ext
      renderocc eval --pred preds --gt data/nuscenes/gts --dataroot data/nuscenes --out eval-ext
    """
    resolve_device(device)  # an unusable --device is one line before any work
    if (ckpt is None) == (pred is None):
        raise UserError("eval: give exactly one of --ckpt (a renderocc checkpoint) or --pred (a directory of "
                        "predictions)")
    if ckpt is not None:
        if store is None:
            raise UserError("eval --ckpt needs --store (the GT and the camera images)")
        if gt_dir or allow_missing or dataroot:
            raise UserError("eval --ckpt: --gt, --dataroot and --allow-missing apply to --pred only")
        m = evaluation.run(store, ckpt, out, split, rays_per_sample, progress=not quiet, device=device,
                           rayiou=rayiou, tta=tta, say=click.echo)
    else:
        if (store is None) == (gt_dir is None):
            raise UserError("eval --pred needs exactly one GT source: --store STORE or --gt GTDIR")
        if tta != "none":
            raise UserError("eval --pred scores files as given: apply --tta in `renderocc predict`")
        m = evaluation.run_predictions(pred, out, split, store=store, gt_dir=gt_dir, dataroot=dataroot,
                                       allow_missing=allow_missing, rayiou=rayiou, progress=not quiet,
                                       say=click.echo)
    click.echo(f"supervision: {m['supervision']}")
    if ckpt is not None:
        how = (m.get("threshold_info") or {}).get("how", "how it was chosen is not recorded")
        click.echo(f"split {m['split']}: {m['samples']} samples ({m['occ_samples']} with Occ3D GT), "
                   f"threshold density > {m['threshold']:.3g} ({how})")
        if m.get("tta"):
            mode = m["tta"].split(":")[0]
            click.echo(f"test-time augmentation: {mode} ({TTA_PASSES[mode]} passes)")
    else:
        miss = m["missing"]
        click.echo(f"split {m['split']}: {m['samples']} samples scored"
                   + (f", {len(miss)} without a prediction: {', '.join(miss[:5])}{' …' if len(miss) > 5 else ''}"
                      if miss else ""))
    click.echo(f"mIoU {_pct(m['miou'])} (all voxels {_pct(m['miou_nomask'])}), geometry IoU "
               f"{_pct(m['geometry_iou'])} (all voxels {_pct(m['geometry_iou_nomask'])})")
    if m.get("rayiou") is not None:
        click.echo(f"RayIoU {_pct(m['rayiou'])} (@1 m {_pct(m['rayiou_1'])}, @2 m {_pct(m['rayiou_2'])}, "
                   f"@4 m {_pct(m['rayiou_4'])})")
    if m.get("depth_pixels"):
        click.echo(f"depth AbsRel {_num(m['depth_abs_rel'])}, RMSE {_num(m['depth_rmse'])} m, "
                   f"δ<1.25 {_pct(m['depth_delta1'])} %; 2D semantic mIoU {_pct(m['sem2d_miou'])}")
    click.echo(f"wrote {out}/metrics.json and {out}/metrics.md")


@click.command("predict")
@click.option("--store", required=True, help="Ray store path or URL.")
@click.option("--ckpt", required=True, help="Checkpoint written by `renderocc train`.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory: OUT/<scene_name>/<sample_token>/labels.npz.")
@click.option("--split", multiple=True, default=SPLIT_DEFAULT, show_default=True, help=SPLIT_HELP)
@click.option("--vis-stride", default=4, show_default=True, type=click.IntRange(min=1),
              help="Stored-image pixel stride of the visibility rays.")
@click.option("--min-transmittance", default=0.1, show_default=True,
              type=FiniteFloat(0, 1, min_open=True),
              help="A voxel is visible if some camera ray's rendering weighs it by at least this "
                   "(transmittance before a sample × the sample's trilinear weight on the voxel).")
@click.option("--store-grid", is_flag=True,
              help="Write at the store's Occ3D grid (200×200×16) instead of the model's grid "
                   "(what `eval --pred` and other Occ3D tools read).")
@click.option("--tta", type=click.Choice(list(TTA_MODES)), default="none", show_default=True,
              help="Test-time augmentation. " + TTA_HELP)
@device_option
@quiet_option
def predict(store: str, ckpt: str, out: str, split: tuple[str, ...], vis_stride: int,
            min_transmittance: float, store_grid: bool, tta: str, device: str, quiet: bool) -> None:
    """Occ3D-format labels.npz per sample, with density, occupancy probability and visibility.

    \b
    Example:
      renderocc predict --store store-val --ckpt run/last.pt --out pred
      renderocc predict --store store --ckpt run/last.pt --out pred-all --split all
    """
    resolve_device(device)  # an unusable --device is one line before any work
    info = prediction.run(store, ckpt, out, split, vis_stride, min_transmittance, progress=not quiet,
                          device=device, store_grid=store_grid, tta=tta)
    seen = info["visibility"]["mean_visible_share"]
    click.echo(f"wrote {info['samples']} predictions under {out} (grid {info['grid']['shape']}, "
               f"visible share {_pct(seen)} %); keys: {', '.join(info['keys'])}")


@click.command("viz")
@click.option("--store", required=True, help="Ray store path or URL.")
@click.option("--ckpt", default=None, help="Checkpoint: adds rendered depth/semantics and predictions.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the PNGs.")
@click.option("--samples", default=3, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Draw N evenly spaced samples of the store.")
@click.option("--stride", default=None, type=click.IntRange(min=1),
              help="Pixel stride of rendered images (default: ~200 columns).")
@device_option
@quiet_option
def viz(store: str, ckpt: str | None, out: str, samples: int, stride: int | None, device: str,
        quiet: bool) -> None:
    """PNG figures: labels on camera images, renderings, BEV and 3D occupancy (GT vs prediction).

    \b
    Example:
      renderocc viz --store store-val --ckpt run/last.pt --out viz --samples 2
    """
    resolve_device(device)  # an unusable --device is one line before any work
    paths = figures.run(store, ckpt, out, samples, stride, progress=not quiet, device=device)
    click.echo(f"wrote {len(paths)} figures to {out}")
    for p in paths:
        click.echo(f"  {p}")
