"""`renderocc fit`: parse options, build the config, call `fit_store`, print the headline."""

from __future__ import annotations

import math

import click
import numpy as np

from renderocc.config import load_config
from renderocc.errors import UserError
from renderocc.eval.common import open_store
from renderocc.fit.fit import METHODS, PLATEAU_TOLERANCE, fit_config, fit_store
from renderocc.options import FiniteFloat, device_option, quiet_option, resolve_device
from renderocc.outputs import prepare_out_dir

DEFAULT_ITERS = 100
DEFAULT_LR = 0.3
DEFAULT_RAYS = 4096  # per iteration: the renderer's backward has a large per-call cost on a full grid
# A free grid shares nothing between voxels: a voxel's end points are all that keep it occupied against
# the rendered terms' pull (a grazing ray crosses the ground's voxels; a thin object fills part of its
# voxel). 0 → 1 → 5 → 20: 23 → 57 → 65 → 70 mIoU on a held-out synthetic sample, 100 iterations
# (benchmarks/results/fit_voxelize_baseline.md). --set loss.label_voxels=… overrides it.
DEFAULT_LABEL_VOXELS = 20.0


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def sample_count(ctx, param, value: str | None) -> int | None:  # noqa: ANN001 - click's callback signature
    """`--samples N`: a count, as in `renderocc viz` and `qa --fit`; a list of indices says where it goes."""
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--samples {value}: --samples is a count (N evenly spaced samples, as in `renderocc viz`); "
                        f"sample indices go in --indices {value}") from None
    if n < 1:
        raise UserError(f"--samples {value}: give a count of at least 1")
    return n


def pick_samples(indices: str | None, count: int | None, n: int) -> list[int]:
    """`--indices I,J,..` as given, or `--samples N` evenly spaced (viz's rule), or every sample."""
    if indices is not None and count is not None:
        raise UserError("fit: give --indices I,J,.. or --samples N, not both")
    if count is not None:
        return sorted(set(np.linspace(0, n - 1, min(count, n)).round().astype(int).tolist())) if n else []
    if indices is None or not indices.strip():
        return list(range(n))
    out = []
    for item in indices.split(","):
        item = item.strip()
        try:
            i = int(item)
        except ValueError:
            raise UserError(f"--indices: {item!r} is not a sample index") from None
        if not 0 <= i < n:
            raise UserError(f"--indices: index {i} out of range (the store has {n} samples: 0..{n - 1})")
        out.append(i)
    return list(dict.fromkeys(out))


def build_fit_config(store_grid: dict, config: str, overrides: tuple[str, ...] | list[str], *,
                     aux_frames: int | None = None, no_motion_masks: bool = False,
                     supervision: str | None = None):
    """The fit's Config: fit defaults (store grid, `DEFAULT_RAYS` rays, `DEFAULT_LABEL_VOXELS`), then --set,
    then the flags."""
    items = [f"data.rays={DEFAULT_RAYS}", f"loss.label_voxels={DEFAULT_LABEL_VOXELS}", *overrides]
    if aux_frames is not None:
        items.append(f"data.aux_frames={aux_frames}")
    if no_motion_masks:
        items.append("data.use_motion_masks=false")
    if supervision is not None:
        items.append(f"supervision={supervision}")
    cfg = load_config(config, items)
    keep_grid = any(o.split("=", 1)[0].strip().startswith("grid.") for o in overrides)
    return fit_config(cfg, store_grid, keep_grid=keep_grid)


@click.command("fit")
@click.option("--store", required=True, help="Ray store path or URL (with Occ3D GT: metrics need it).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory: OUT/<scene>/<token>/labels.npz, OUT/metrics.json, OUT/metrics.md.")
@click.option("--indices", default=None, metavar="I,J,..", help="Sample indices to fit (default: every sample).")
@click.option("--samples", default=None, metavar="N", callback=sample_count,
              help="Fit N evenly spaced samples of the store instead (as `renderocc viz --samples N` draws).")
@click.option("--aux-frames", type=click.IntRange(min=0), default=None,
              help="±K neighbouring keyframes whose labels add auxiliary rays (default: the config's, 3).")
@click.option("--no-motion-masks", is_flag=True,
              help="Keep auxiliary labels on moving objects (an ablation: they smear along the track).")
@click.option("--iters", type=click.IntRange(min=1), default=DEFAULT_ITERS, show_default=True,
              help="Optimiser iterations per sample.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=DEFAULT_LR, show_default=True,
              help="Adam learning rate on the raw per-voxel parameters (decays to 5 %).")
@click.option("--supervision", type=click.Choice(["2d", "3d"]), default=None,
              help="2d: the training losses on label rays (default); 3d: the occ3d term on the dense GT "
                   "inside mask_camera (checks the fit itself: ≈1.0 there).")
@click.option("--method", type=click.Choice(METHODS), default="both", show_default=True,
              help="optimise: the training losses on a free grid; voxelize: the baseline with no optimisation "
                   "(label end points' majority class, the rest free); both: scored side by side.")
@click.option("--config", default="demo", show_default=True,
              help="Loss weights and render settings: TOML file or a shipped config (demo | occ3d).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set data.rays=16384 --set loss.freespace=0.")
@device_option
@quiet_option
def fit(store: str, out: str, indices: str | None, samples: int | None, aux_frames: int | None,
        no_motion_masks: bool, iters: int, lr: float, supervision: str | None, method: str, config: str,
        overrides: tuple[str, ...], device: str, quiet: bool) -> None:
    """How much of the scene do the 2D labels determine? Fit a free voxel grid per keyframe.

    Per sample, free per-voxel density and semantic logits (no network) are optimised with the
    training renderer, losses and label rays (key + ±K auxiliary, dynamic aux labels dropped;
    every ray once per epoch; loss.label_voxels 20 unless set), the threshold is chosen by
    training's rule on that sample, and the result is scored against the store's Occ3D GT like
    `renderocc eval`, beside the voxelisation baseline, the label coverage and the convergence
    trace (metrics.md, convergence.png).

    \b
    Example:
      renderocc fit --store store-val --out fit --indices 0,4,8
      renderocc fit --store store-val --out fit --samples 3
      renderocc fit --store store-val --out fit3d --indices 0 --supervision 3d
    """
    device = resolve_device(device)  # an unusable --device is one line before any work
    reader = open_store(store)
    picks = pick_samples(indices, samples, len(reader))
    cfg = build_fit_config(reader.grid, config, overrides, aux_frames=aux_frames,
                           no_motion_masks=no_motion_masks, supervision=supervision)
    prepare_out_dir(out)
    m = fit_store(reader, picks, cfg, iters=iters, lr=lr, out=out, device=device,
                  progress=not quiet, method=method)
    masks = f", {m['mask_rays_per_iter']} mask rays/iteration" if m["mask_rays_per_iter"] else ""
    click.echo(f"fit: {m['samples']} samples, supervision {m['supervision']} (semantics: {m['semantic_source']}"
               f"{masks}), aux ±{m['aux_frames']} frames"
               f"{'' if m['use_motion_masks'] else ' (motion masks ignored)'}, {m['iters']} iterations, "
               f"{m['wall_s']:.1f} s")
    v = m["voxelize"]
    if method != "voxelize":
        click.echo(f"mIoU {_pct(m['miou'])} (all voxels {_pct(m['miou_nomask'])}), geometry IoU "
                   f"{_pct(m['geometry_iou'])} (all voxels {_pct(m['geometry_iou_nomask'])}), "
                   f"label coverage {_pct(m['label_coverage'])}")
        thr = sorted(m["thresholds"].values())
        click.echo(f"thresholds: density > {thr[0]:.3g}" + (f" … {thr[-1]:.3g}" if len(thr) > 1 else "")
                   + f" ({m['threshold_rule']})")
        rows = [r for r in m["per_sample"] if r.get("plateau_iter")]
        if rows:
            plateau = sorted(r["plateau_iter"] for r in rows)
            epochs = sorted(r["epochs"] for r in rows if r.get("epochs") is not None)
            span = (f"; {epochs[0]:.2f}" + (f" … {epochs[-1]:.2f}" if len(epochs) > 1 else "") + " epochs of label rays"
                    if epochs else "")
            click.echo(f"convergence: geometry IoU within {100 * PLATEAU_TOLERANCE:g} point of its last value from "
                       f"iteration {plateau[0]}"
                       + (f" … {plateau[-1]}" if len(plateau) > 1 else "") + f"{span} (convergence.png)")
    if method != "optimise":
        click.echo(f"voxelisation baseline: mIoU {_pct(v['miou'])}, geometry IoU {_pct(v['geometry_iou'])}"
                   f"{'' if method == 'both' else ', label coverage ' + _pct(m['label_coverage'])} "
                   "(label end points' majority class, the rest free; no optimisation)")
    click.echo(f"wrote {m['samples']} labels.npz under {out}, {out}/metrics.json and {out}/metrics.md")
