"""The `renderocc` command line: a click group whose commands live next to the code they run.

Commands are imported lazily so `renderocc --help` is instant and one area's heavy imports
(torch, the devkit) never slow down another area's command.
"""

from __future__ import annotations

import importlib

import click

from renderocc import __version__
from renderocc.errors import UserError


class LazyGroup(click.Group):
    """A click group whose subcommands are `module:attribute` strings imported on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            target, _ = self.lazy[name]
            module_name, attr = target.split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        """Filesystem faults the user can fix (no permission, disk full, a file where a folder
        should be) end in one line naming the path, never a traceback."""
        try:
            return super().invoke(ctx)
        except OSError as e:
            raise UserError(describe_os_error(e)) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        rows += [(n, c.get_short_help_str()) for n, c in self.commands.items() if n not in self.lazy]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


def describe_os_error(e: OSError) -> str:
    """One line: what failed, on which path."""
    what = e.strerror or e.__class__.__name__
    paths = [p for p in (e.filename, e.filename2) if p]
    if paths:
        return f"{' -> '.join(map(str, paths))}: {what}"
    return " ".join(str(e).split())[:200] or what


@click.group(cls=LazyGroup, lazy={
    "nuscenes": ("renderocc.synth.commands:synth_nuscenes",
                 "Write a synthetic world as a devkit-loadable nuScenes dataset."),
    "airside": ("renderocc.synth.commands:synth_airside",
                "Write a synthetic airport apron (nuScenes format, its own classes)."),
})
def synth() -> None:
    """Synthetic worlds written in real dataset formats, with known 3D ground truth."""


@click.group(cls=LazyGroup, lazy={
    "nuscenes": ("renderocc.prep.commands:prep_nuscenes",
                 "Project LiDAR depth/lidarseg into per-camera labels; write a ray store."),
    "motion-masks": ("renderocc.prep.motion_commands:prep_motion_masks",
                     "Mark labels on moving objects from annotation tracks."),
    "masks": ("renderocc.prep.mask_commands:prep_masks",
              "Import dense 2D semantic masks (PNG per camera image) into a store."),
})
def prep() -> None:
    """Turn a dataset into a ray store for rendering supervision."""


@click.group(cls=LazyGroup, lazy={
    "info": ("renderocc.store.commands:store_info", "Print a summary of a ray store."),
    "validate": ("renderocc.store.commands:store_validate",
                 "Check a store's schema, checksums and cross-references."),
})
def store() -> None:
    """Inspect and check ray stores."""


@click.group(cls=LazyGroup, lazy={
    "synth": ("renderocc.cli:synth", "Synthetic worlds written in real dataset formats."),
    "prep": ("renderocc.cli:prep", "Turn a dataset into a ray store (labels, motion masks)."),
    "store": ("renderocc.cli:store", "Inspect and check ray stores."),
    "build-ext": ("renderocc.cuda.commands:build_ext", "Prebuild the renderer extension."),
    "train": ("renderocc.train.commands:train", "Train occupancy from a ray store."),
    "eval": ("renderocc.eval.commands:evaluate", "Occ3D mIoU and rendered 2D metrics."),
    "predict": ("renderocc.eval.commands:predict", "Write Occ3D-format predictions."),
    "viz": ("renderocc.eval.commands:viz", "PNG figures of labels, renderings, occupancy."),
    "qa": ("renderocc.qa.commands:qa", "Label-coverage report (HTML + JSON)."),
    "fit": ("renderocc.fit.commands:fit", "Fit a free voxel grid per keyframe: what the labels determine."),
})
@click.version_option(__version__, prog_name="renderocc")
def main() -> None:
    """renderocc: train 3D semantic occupancy from 2D labels.

    \b
    Pipeline:
      renderocc synth nuscenes --out data/synth
      renderocc prep nuscenes --dataroot data/synth --out store
      renderocc prep motion-masks --store store
      renderocc qa --store store --out qa
      renderocc train --store store --out run --config demo
      renderocc eval --store store --ckpt run/last.pt --out eval
      renderocc fit --store store --out fit --samples 2   (no network: what the labels determine)
    """


if __name__ == "__main__":
    main()
