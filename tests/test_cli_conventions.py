"""One convention per kind of option across the commands: a newcomer learns a flag once."""

from __future__ import annotations

import click
from click.testing import CliRunner

from renderocc.cli import main
from renderocc.options import FiniteFloat

WORKERS = {"synth nuscenes", "synth airside", "prep nuscenes", "prep motion-masks", "prep masks", "train", "eval",
           "predict", "viz", "qa", "fit"}


def commands() -> dict[str, click.Command]:
    """Every leaf command by its full name ("prep nuscenes"), loaded through the lazy group."""
    out, ctx = {}, click.Context(main)
    for name in main.list_commands(ctx):
        cmd = main.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            sub = click.Context(cmd, parent=ctx)
            out.update({f"{name} {s}": cmd.get_command(sub, s) for s in cmd.list_commands(sub)})
        else:
            out[name] = cmd
    return out


def test_every_command_with_a_progress_bar_takes_quiet():
    found = commands()
    assert WORKERS <= set(found), sorted(WORKERS - set(found))
    for name in WORKERS:
        opts = {o for p in found[name].params for o in p.opts}
        assert {"--quiet", "--no-progress"} <= opts, name


def test_every_command_that_runs_a_model_takes_device(tmp_path):
    found = commands()
    for name in ("train", "eval", "predict", "viz", "fit"):
        assert "--device" in {o for p in found[name].params for o in p.opts}, name
    res = CliRunner().invoke(main, ["train", "--store", str(tmp_path), "--out", str(tmp_path / "r"), "--device", "tpu"])
    assert res.exit_code == 2 and "--device tpu: use auto, cpu, cuda or cuda:N" in res.output
    assert not (tmp_path / "r").exists()


def test_every_float_option_refuses_nan_and_inf():
    floats = [(name, p) for name, cmd in commands().items() for p in cmd.params
              if isinstance(p.type, click.types.FloatParamType)]
    assert len(floats) >= 6
    assert all(isinstance(p.type, FiniteFloat) for _, p in floats), [f"{n} {p.opts}" for n, p in floats
                                                                     if not isinstance(p.type, FiniteFloat)]


def test_image_sizes_are_width_by_height_in_synth_and_prep(tmp_path):
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(tmp_path), "--out", str(tmp_path / "s"),
                                    "--image-size", "108x192"])
    assert res.exit_code == 2 and "is portrait" in res.output and "use 192x108" in res.output
    for group in ("synth nuscenes", "prep nuscenes"):
        text = commands()[group].get_help(click.Context(commands()[group]))
        assert "WxH" in text or "WIDTHxHEIGHT" in text, group
