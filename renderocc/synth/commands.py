"""`renderocc synth nuscenes`: write a synthetic world as a devkit-loadable nuScenes dataset."""

from __future__ import annotations

import re
import time

import click

from renderocc.errors import UserError
from renderocc.options import quiet_option
from renderocc.synth.conditions import parse_conditions
from renderocc.synth.writer import write_dataset


def _parse_size(_ctx, _param, value: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value or "")
    if not m:
        raise UserError(f"--image-size must look like 800x450 (got {value!r}).")
    return int(m.group(1)), int(m.group(2))


def _world_options(unit: str):
    """--out, --scenes, --samples-per-scene and --seed, shared by every synthetic world."""
    def wrap(f):
        for opt in reversed([
            click.option("--out", required=True, type=click.Path(file_okay=False), help="Dataroot to create."),
            click.option("--scenes", default=2, show_default=True, type=int, help=f"Number of scenes ({unit})."),
            click.option("--samples-per-scene", default=10, show_default=True, type=int,
                         help="Keyframes (2 Hz) per scene."),
            click.option("--seed", default=0, show_default=True, type=int,
                         help="Random seed; same seed, same dataset."),
        ]):
            f = opt(f)
        return f
    return wrap


@click.command("nuscenes")
@_world_options("worlds")
@click.option("--image-size", default="800x450", show_default=True, callback=_parse_size,
              help="Camera image size WxH (nuScenes is 1600x900; intrinsics are scaled).")
@click.option("--version", default="v1.0-mini", show_default=True, help="Table folder name (devkit version).")
@click.option("--sweeps-per-sample", default=4, show_default=True, type=int,
              help="LiDAR sweeps between consecutive keyframes (nuScenes has 9).")
@click.option("--camera-sweeps-per-sample", default=0, show_default=True, type=int,
              help="Unlabelled camera frames between consecutive keyframes (sweeps/CAM_*; nuScenes' 12 Hz cameras "
                   "give 5), each with a LiDAR sweep at its instant.")
@click.option("--workers", default=None, type=int, help="Worker processes [default: min(2, CPUs)].")
@click.option("--camera-truth", is_flag=True,
              help="Also write per-pixel depth/label/instance truth under synth_truth/cameras/.")
@click.option("--gt", default="occ3d", show_default=True, type=click.Choice(["occ3d", "world"]),
              help="Occupancy truth in gts/: occ3d = scene-accumulated LiDAR (as Occ3D builds it), "
                   "world = the world's solids. Masks are Occ3D's ray casting either way.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is not empty.")
@quiet_option
def synth_nuscenes(out: str, scenes: int, samples_per_scene: int, seed: int, image_size: tuple[int, int],
                   version: str, sweeps_per_sample: int, camera_sweeps_per_sample: int, workers: int | None,
                   camera_truth: bool, gt: str, overwrite: bool, quiet: bool) -> None:
    """Write a synthetic world as a devkit-loadable nuScenes dataset.

    Includes lidarseg, sweeps, annotations, Occ3D ground truth (gts/; which truth is recorded in
    synth_truth/gt.json) and per-point truth (synth_truth/), all from the same procedural 3D world.

    \b
    Example:
      renderocc synth nuscenes --out data/synth --scenes 2 --samples-per-scene 10 --seed 0
    """
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers}).")
    start = time.perf_counter()
    path = write_dataset(out, scenes, samples_per_scene, seed, image_size=image_size, version=version,
                         overwrite=overwrite, sweeps_per_sample=sweeps_per_sample, workers=workers,
                         progress=not quiet, camera_truth=camera_truth, gt=gt,
                         camera_sweeps_per_sample=camera_sweeps_per_sample)
    sweeps = f", {camera_sweeps_per_sample} camera sweeps per interval" if camera_sweeps_per_sample else ""
    click.echo(f"wrote {scenes} scene(s) x {samples_per_scene} keyframes ({image_size[0]}x{image_size[1]} "
               f"images{sweeps}) to {path} in {time.perf_counter() - start:.1f} s")


@click.command("airside")
@_world_options("aprons")
@click.option("--image-size", default="800x450", show_default=True, callback=_parse_size,
              help="Camera image size WxH (intrinsics are scaled from nuScenes' 1600x900).")
@click.option("--night", is_flag=True, help="Floodlit night (every scene): low ambient light, light pools "
              "under the pole floodlights, noisy images.")
@click.option("--wet", is_flag=True, help="Wet, reflective pavement (every scene): LiDAR drop-outs at grazing "
              "incidence, mirror reflections and glare in the images.")
@click.option("--conditions", default=None, metavar="LIST",
              help="Per-scene conditions, cycled over the scenes: day, night, wet or combinations, e.g. "
                   "day,night+wet. Written into each scene's description (QA groups by it).")
@click.option("--version", default="v1.0-mini", show_default=True, help="Table folder name (devkit version).")
@click.option("--sweeps-per-sample", default=4, show_default=True, type=int,
              help="LiDAR sweeps between consecutive keyframes (nuScenes has 9).")
@click.option("--camera-sweeps-per-sample", default=0, show_default=True, type=int,
              help="Unlabelled camera frames between consecutive keyframes (sweeps/CAM_*), each with a LiDAR "
                   "sweep at its instant.")
@click.option("--workers", default=None, type=int, help="Worker processes [default: min(2, CPUs)].")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is not empty.")
@quiet_option
def synth_airside(out: str, scenes: int, samples_per_scene: int, seed: int, image_size: tuple[int, int],
                  night: bool, wet: bool, conditions: str | None, version: str, sweeps_per_sample: int,
                  camera_sweeps_per_sample: int, workers: int | None, overwrite: bool, quiet: bool) -> None:
    """Write a synthetic airport apron as a devkit-loadable nuScenes dataset, with its own classes.

    Stands with narrow-body aircraft (37.6 m long, 35.8 m span), jet bridges, GSE (tugs, belt
    loaders, fuel trucks, baggage carts with tow bars), ground crew, cones, apron markings, the
    terminal façade and light poles; an aircraft under tow, a moving baggage train and walkers.
    Writes DIR/classes.toml (the airside class map: `prep nuscenes` picks it up), lidarseg and
    gts/ in those classes, and dense GT masks DIR/masks/samples/CAM_*/<image>.png (class index,
    255 = unlabelled).

    \b
    Example:
      renderocc synth airside --out data/apron --scenes 1 --samples-per-scene 6 --seed 0 --night
      renderocc synth airside --out data/apron --scenes 2 --conditions day,night+wet
    """
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers}).")
    per_scene = parse_conditions(conditions) if conditions else None
    start = time.perf_counter()
    path = write_dataset(out, scenes, samples_per_scene, seed, image_size=image_size, version=version,
                         overwrite=overwrite, sweeps_per_sample=sweeps_per_sample, workers=workers,
                         progress=not quiet, kind="airside", night=night, wet=wet, conditions=per_scene,
                         camera_sweeps_per_sample=camera_sweeps_per_sample)
    said = "".join(f", {w}" for w, on in (("night", night), ("wet", wet), (f"conditions {conditions}", conditions))
                   if on)
    click.echo(f"wrote {scenes} airside scene(s) x {samples_per_scene} keyframes ({image_size[0]}x{image_size[1]} "
               f"images{said}) to {path} in {time.perf_counter() - start:.1f} s")
