"""`renderocc train`: parse options, load the config, call the trainer with the eval protocol's
validator. Nothing else. (The CLI glue of training: the one train module that imports eval.)"""

from __future__ import annotations

import click

from renderocc.config import describe, load_config, resolved
from renderocc.errors import UserError
from renderocc.eval.validation import held_out_validator
from renderocc.options import device_option, quiet_option, resolve_device
from renderocc.outputs import prepare_out_dir
from renderocc.store.reader import StoreReader
from renderocc.train.trainer import train as run


@click.command("train")
@click.option("--store", default=None, help="Ray store (path or URL) written by `renderocc prep nuscenes`.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--config", "config", default="demo", show_default=True,
              help="TOML file, or a shipped config: demo | occ3d | renderocc (the official recipe).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set data.rays=8192 --set optim.lr=1e-3.")
@click.option("--max-steps", type=int, default=None, help="Train this many steps (sets train.max_steps).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt (same loss curve).")
@click.option("--pretrained", type=click.Path(dir_okay=False), default=None,
              help="Weights file (.safetensors or a weights-only torch file) for the image encoder: torchvision "
                   "names for the plain ResNet, timm names for timm:<name>; loaded strictly; nothing is downloaded.")
@click.option("--pretrained-prefix", default=None, metavar="PREFIX",
              help="Take the encoder from the keys starting with PREFIX (e.g. img_backbone. in a detector "
                   "checkpoint), the prefix stripped.")
@click.option("--pretrained-partial", is_flag=True,
              help="Load the --pretrained tensors that match and print what did not (default: refuse any mismatch).")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None, metavar="CKPT",
              help="Start a new run from CKPT's weights (any compatible config; a new optimiser and schedule). "
                   "--resume instead continues the same run.")
@click.option("--init-weights", type=click.Choice(["auto", "ema", "model"]), default="auto", show_default=True,
              help="Which of CKPT's weights --init-from loads (auto: the EMA when it kept one).")
@click.option("--init-partial", is_flag=True,
              help="Load the --init-from tensors that match and print what did not (default: refuse any mismatch).")
@click.option("--print-config", is_flag=True,
              help="Print the resolved config (every key, its value and meaning) and exit; with --store, "
                   "the grid is resolved against that store.")
@device_option
@quiet_option
def train(store: str | None, out: str | None, config: str, overrides: tuple[str, ...], max_steps: int | None,
          resume: bool, pretrained: str | None, pretrained_prefix: str | None, pretrained_partial: bool,
          init_from: str | None, init_weights: str, init_partial: bool, print_config: bool, device: str,
          quiet: bool) -> None:
    """Train occupancy from a ray store (2D rendering supervision; 3D optional).

    \b
    Single process:  renderocc train --store S --out RUN --config demo
    Fine-tune:       renderocc train --store S --out RUN2 --init-from RUN/best.pt --set optim.lr=1e-4
    DDP (CPU/GPU):   torchrun --nproc_per_node 2 -m renderocc.cli train --store S --out RUN
    The config:      renderocc train --print-config --config demo --set data.rays=8192
    Outputs: RUN/last.pt, RUN/best.pt (with train.val_every), RUN/metrics.jsonl, RUN/metrics.csv,
             RUN/tb/ (TensorBoard), RUN/config.json
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
    for name, value in (("--pretrained-prefix", pretrained_prefix), ("--pretrained-partial", pretrained_partial)):
        if value and not pretrained:
            raise UserError(f"{name} applies to --pretrained FILE, and none was given")
    if init_partial and not init_from:
        raise UserError("--init-partial applies to --init-from CKPT, and none was given")
    reader = StoreReader(store)
    cfg = resolved(cfg, reader.grid)  # a grid that cannot be trained or scored: one line, now
    prepare_out_dir(out)   # before the model is built: an unwritable --out is found at once
    run(reader, out, cfg, validator=held_out_validator(reader, cfg) if cfg.train.val_every else None,
        resume=resume, pretrained=pretrained, pretrained_prefix=pretrained_prefix,
        pretrained_partial=pretrained_partial, init_from=init_from, init_weights=init_weights,
        init_partial=init_partial, quiet=quiet, device=device)
