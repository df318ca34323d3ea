"""`renderocc train`: parse options, load the config, call the trainer. Nothing else."""

from __future__ import annotations

import click

from renderocc.config import describe, load_config, resolved
from renderocc.errors import UserError
from renderocc.options import device_option, quiet_option, resolve_device
from renderocc.outputs import prepare_out_dir
from renderocc.store.reader import StoreReader
from renderocc.train.trainer import train as run


@click.command("train")
@click.option("--store", default=None, help="Ray store (path or URL) written by `renderocc prep nuscenes`.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--config", "config", default="demo", show_default=True,
              help="TOML file, or a shipped config: demo | occ3d.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set data.rays=8192 --set optim.lr=1e-3.")
@click.option("--max-steps", type=int, default=None, help="Train this many steps (sets train.max_steps).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt (same loss curve).")
@click.option("--pretrained", type=click.Path(dir_okay=False), default=None,
              help="state_dict file for the image encoder (torchvision ResNet names); nothing is downloaded.")
@click.option("--print-config", is_flag=True,
              help="Print the resolved config (every key, its value and meaning) and exit; with --store, "
                   "the grid is resolved against that store.")
@device_option
@quiet_option
def train(store: str | None, out: str | None, config: str, overrides: tuple[str, ...], max_steps: int | None,
          resume: bool, pretrained: str | None, print_config: bool, device: str, quiet: bool) -> None:
    """Train occupancy from a ray store (2D rendering supervision; 3D optional).

    \b
    Single process:  renderocc train --store S --out RUN --config demo
    DDP (CPU/GPU):   torchrun --nproc_per_node 2 -m renderocc.cli train --store S --out RUN
    The config:      renderocc train --print-config --config demo --set data.rays=8192
    Outputs: RUN/last.pt, RUN/metrics.jsonl, RUN/metrics.csv, RUN/tb/ (TensorBoard), RUN/config.json
    """
    if max_steps is not None:
        if max_steps < 1:
            raise UserError(f"--max-steps {max_steps}: must be ≥ 1")
        overrides = (*overrides, f"train.max_steps={max_steps}")
    cfg = load_config(config, overrides)
    resolve_device(device)  # an unusable --device is one line before any work
    if print_config:
        if store is not None:
            cfg = resolved(cfg, StoreReader(store).grid)
        click.echo(describe(cfg))
        return
    for name, value in (("--store", store), ("--out", out)):
        if value is None:
            raise UserError(f"missing option {name} (or use --print-config)")
    cfg = resolved(cfg, StoreReader(store).grid)  # a grid that cannot be trained or scored: one line, now
    prepare_out_dir(out)   # before the model is built: an unwritable --out is found at once
    run(store, out, cfg, resume=resume, pretrained=pretrained, quiet=quiet, device=device)
