"""`renderocc prep motion-masks`: thin click wrapper over `renderocc.prep.motion_pipeline.run`."""

from __future__ import annotations

import click

from renderocc.options import FiniteFloat, quiet_option
from renderocc.prep.motion_pipeline import MotionOptions, run


@click.command("motion-masks")
@click.option("--store", required=True, help="A ray store written by `renderocc prep nuscenes`.")
@click.option("--dataroot", default=None, help="nuScenes dataroot with annotations (default: the store's source).")
@click.option("--speed-threshold", default=0.5, show_default=True, type=FiniteFloat(0, None),
              help="A box moves when its track speed (m/s) exceeds this.")
@click.option("--margin", default=0.2, show_default=True, type=FiniteFloat(0, None),
              help="Enlarge moving boxes by this many metres on every side.")
@quiet_option
def prep_motion_masks(store, dataroot, speed_threshold, margin, quiet) -> None:
    """Mark labels on moving objects (from annotation tracks) and write dense motion masks.

    \b
    Example:
      renderocc prep motion-masks --store store/ --speed-threshold 0.5 --margin 0.2

    Adds the `dynamic` and `instance` columns to the store's ray Parquet and a per-camera mask
    array beside the images (images are not rewritten). Rerunning recomputes the same result. An
    interrupted run is named by `store validate`; over a store that already had motion masks, readers
    refuse the half-rewritten store until it is rerun.
    """
    s = run(MotionOptions(store=store, dataroot=dataroot, speed_threshold=speed_threshold, margin=margin,
                          progress=not quiet))
    click.echo(f"{s['samples']} samples, {s['moving_boxes']} moving boxes, {s['dynamic_labels']} of "
               f"{s['labels']} labels dynamic ({s['dynamic_labels'] / max(s['labels'], 1):.2%}) "
               f"in {s['seconds']:.1f} s ({s['seconds'] / max(s['samples'], 1):.3f} s/sample)")
    if "camera_sweeps" in s:
        cs = s["camera_sweeps"]
        click.echo(f"camera sweeps: {cs['frames']} frames, {cs['moving_boxes']} moving boxes (interpolated), "
                   f"{cs['dynamic_labels']} of {cs['labels']} labels dynamic "
                   f"({cs['dynamic_labels'] / max(cs['labels'], 1):.2%})")
    click.echo("share of labels dynamic per class:")
    for name, share in s["dynamic_share_per_class"].items():
        click.echo(f"  {name:<20} {share:8.2%}")
    click.echo("share of labels dynamic per camera:")
    for name, share in s["dynamic_share_per_camera"].items():
        click.echo(f"  {name:<20} {share:8.2%}")
