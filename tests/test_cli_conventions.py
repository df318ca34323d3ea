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


def _opt(cmd: click.Command, flag: str) -> click.Parameter | None:
    return next((p for p in cmd.params if flag in p.opts), None)


def test_split_has_one_default_and_one_meaning_everywhere():
    """`predict` writes what `eval` scores: one default (val), one help text, in every command."""
    found = {name: _opt(cmd, "--split") for name, cmd in commands().items()}
    with_split = {name: p for name, p in found.items() if p is not None}
    assert {"eval", "predict"} <= set(with_split), sorted(with_split)
    assert {tuple(p.default) for p in with_split.values()} == {("val",)}, {n: p.default for n, p in with_split.items()}
    assert len({p.help for p in with_split.values()}) == 1
    assert all("all (every sample)" in p.help for p in with_split.values())


def test_samples_is_a_count_of_evenly_spaced_samples_everywhere(tmp_path):
    """`--samples N` is a count wherever it appears; lists of indices are `--indices I,J,..`."""
    found = commands()
    with_samples = {name: p for name, cmd in found.items() if (p := _opt(cmd, "--samples")) is not None}
    assert {"viz", "fit"} <= set(with_samples), sorted(with_samples)
    for name, p in with_samples.items():
        assert p.metavar == "N" and "evenly spaced" in p.help, name
    assert _opt(found["fit"], "--indices").metavar == "I,J,.."
    for name in with_samples:  # a list given to --samples is refused in one line, before any work
        res = CliRunner().invoke(main, [*name.split(), "--store", str(tmp_path / "none"), "--out",
                                        str(tmp_path / "o"), "--samples", "0,4"])
        assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith("Error:"), (name, res.output)
    res = CliRunner().invoke(main, ["fit", "--store", str(tmp_path), "--out", str(tmp_path / "o"), "--samples", "0,4"])
    assert res.output.strip().splitlines() == [
        "Error: --samples 0,4: --samples is a count (N evenly spaced samples, as in `renderocc viz`); "
        "sample indices go in --indices 0,4"]
    assert not (tmp_path / "o").exists()


def test_fit_picks_samples_like_viz():
    from renderocc.fit.commands import pick_samples

    assert pick_samples(None, 3, 10) == [0, 4, 9] and pick_samples(None, 20, 4) == [0, 1, 2, 3]
    assert pick_samples("2,5,2", None, 10) == [2, 5] and pick_samples(None, None, 3) == [0, 1, 2]


def test_every_long_running_command_takes_quiet_and_every_model_command_device():
    """A command without `--quiet` prints a few lines and no progress bar; a new command picks a side here."""
    found = commands()
    no_progress_bar = {"store info", "store validate", "build-ext"}
    for name, cmd in found.items():
        opts = {o for p in cmd.params for o in p.opts}
        assert ("--quiet" in opts) != (name in no_progress_bar), name
        if "--device" in opts or "--ckpt" in opts:
            assert {"--device", "--quiet"} <= opts, name
