"""Click commands `renderocc eval | predict | viz`: parse, call, print. The work is elsewhere."""

from __future__ import annotations

import math

import click

SPLIT_HELP = ("val (nuScenes val/mini_val scenes present in the store), all, or scene names "
              "(repeat or comma-separate).")


def _device_option(f):
    return click.option("--device", default="auto", show_default=True,
                        help="auto (CUDA when available), cpu, cuda or cuda:N.")(f)


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _num(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


@click.command("eval")
@click.option("--store", required=True, help="Ray store path or URL (with Occ3D GT for 3D metrics).")
@click.option("--ckpt", required=True, help="Checkpoint written by `renderocc train`.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for metrics.json and metrics.md.")
@click.option("--split", multiple=True, default=("val",), show_default=True, help=SPLIT_HELP)
@click.option("--rays-per-sample", default=0, show_default=True, type=click.IntRange(min=0),
              help="Label rays rendered per sample for the 2D metrics (0 = all).")
@_device_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(store: str, ckpt: str, out: str, split: tuple[str, ...], rays_per_sample: int,
             device: str, quiet: bool) -> None:
    """Occ3D mIoU / geometry IoU on the store's GT and rendered 2D depth / semantic metrics.

    \b
    Example:
      renderocc eval --store store-val --ckpt run/last.pt --out eval --split all
    """
    from renderocc.eval.evaluate import run

    m = run(store, ckpt, out, split, rays_per_sample, progress=not quiet, device=device)
    click.echo(f"supervision: {m['supervision']}")
    how = (m.get("threshold_info") or {}).get("how", "how it was chosen is not recorded")
    click.echo(f"split {m['split']}: {m['samples']} samples ({m['occ_samples']} with Occ3D GT), "
               f"threshold density > {m['threshold']:.3g} ({how})")
    click.echo(f"mIoU {_pct(m['miou'])} (all voxels {_pct(m['miou_nomask'])}), geometry IoU "
               f"{_pct(m['geometry_iou'])} (all voxels {_pct(m['geometry_iou_nomask'])})")
    click.echo(f"depth AbsRel {_num(m['depth_abs_rel'])}, RMSE {_num(m['depth_rmse'])} m, "
               f"δ<1.25 {_pct(m['depth_delta1'])} %; 2D semantic mIoU {_pct(m['sem2d_miou'])}")
    click.echo(f"wrote {out}/metrics.json and {out}/metrics.md")


@click.command("predict")
@click.option("--store", required=True, help="Ray store path or URL.")
@click.option("--ckpt", required=True, help="Checkpoint written by `renderocc train`.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory: OUT/<scene_name>/<sample_token>/labels.npz.")
@click.option("--split", multiple=True, default=("all",), show_default=True, help=SPLIT_HELP)
@click.option("--vis-stride", default=4, show_default=True, type=click.IntRange(min=1),
              help="Stored-image pixel stride of the visibility rays.")
@click.option("--min-transmittance", default=0.1, show_default=True,
              type=click.FloatRange(0, 1, min_open=True),
              help="A voxel is visible if some camera ray's rendering weighs it by at least this "
                   "(transmittance before a sample × the sample's trilinear weight on the voxel).")
@click.option("--store-grid", is_flag=True,
              help="Write at the store's Occ3D grid (200×200×16) instead of the model's grid.")
@_device_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(store: str, ckpt: str, out: str, split: tuple[str, ...], vis_stride: int,
            min_transmittance: float, store_grid: bool, device: str, quiet: bool) -> None:
    """Occ3D-format labels.npz per sample, with density, occupancy probability and visibility.

    \b
    Example:
      renderocc predict --store store-val --ckpt run/last.pt --out pred
    """
    from renderocc.eval.predict import run

    info = run(store, ckpt, out, split, vis_stride, min_transmittance, progress=not quiet,
               device=device, store_grid=store_grid)
    seen = info["visibility"]["mean_visible_share"]
    click.echo(f"wrote {info['samples']} predictions under {out} (grid {info['grid']['shape']}, "
               f"visible share {_pct(seen)} %); keys: {', '.join(info['keys'])}")


@click.command("viz")
@click.option("--store", required=True, help="Ray store path or URL.")
@click.option("--ckpt", default=None, help="Checkpoint: adds rendered depth/semantics and predictions.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the PNGs.")
@click.option("--samples", default=3, show_default=True, type=click.IntRange(min=1),
              help="Number of evenly spaced samples to draw.")
@click.option("--stride", default=None, type=click.IntRange(min=1),
              help="Pixel stride of rendered images (default: ~200 columns).")
@_device_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def viz(store: str, ckpt: str | None, out: str, samples: int, stride: int | None, device: str,
        quiet: bool) -> None:
    """PNG figures: labels on camera images, renderings, BEV and 3D occupancy (GT vs prediction).

    \b
    Example:
      renderocc viz --store store-val --ckpt run/last.pt --out viz --samples 2
    """
    from renderocc.eval.viz import run

    paths = run(store, ckpt, out, samples, stride, progress=not quiet, device=device)
    click.echo(f"wrote {len(paths)} figures to {out}")
    for p in paths:
        click.echo(f"  {p}")
