"""`renderocc prep masks`: thin click wrapper over `renderocc.prep.masks.run`."""

from __future__ import annotations

import click

from renderocc.options import quiet_option
from renderocc.prep.masks import MaskOptions, run


@click.command("masks")
@click.option("--store", required=True, help="A ray store written by `renderocc prep nuscenes`.")
@click.option("--masks", required=True, help="Folder of PNG masks: <image path>.png (e.g. samples/CAM_FRONT/x.png).")
@click.option("--dataroot", default=None, help="nuScenes dataroot (image names; default: the store's source).")
@quiet_option
def prep_masks(store, masks, dataroot, quiet) -> None:
    """Import dense 2D semantic masks (uint8 class per pixel, 255 = unlabelled) into a store.

    \b
    Example:
      renderocc prep masks --store store --masks data/apron/masks

    One PNG per camera image at the image's path under MASKS with .png for .jpg, at the original
    image size, classes of the store's vocabulary. Stored beside the images at the stored size
    (nearest-neighbour, the images' crop) and recorded in the manifest; rerunning replaces them: the
    new set is written beside the old one and the manifest switches to it in one write, so an
    interrupted run leaves the old set or the new one (`store validate` says which).
    """
    s = run(MaskOptions(store=store, masks=masks, dataroot=dataroot, progress=not quiet))
    click.echo(f"imported {s['images']} masks of {s['samples']} samples ({s['labelled_share']:.1%} of pixels "
               f"labelled) in {s['seconds']:.1f} s: {s['root']}")
