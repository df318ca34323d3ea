"""The config schema: one declaration per key, typed overrides, clear one-line errors, plain-data round trip."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from importlib import resources

import pytest
from click.testing import CliRunner

from renderocc.config import Config, GridConfig, load_config, model_grid, parse_value, resolved
from renderocc.errors import UserError
from renderocc.geometry import Grid

STORE_GRID = Grid([-40.0, -40.0, -1.0, 40.0, 40.0, 5.4], [0.4] * 3, [200, 200, 16])


def all_fields(cfg) -> list[tuple[str, dataclasses.Field]]:
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += [(f"{f.name}.{g.name}", g) for g in dataclasses.fields(value)]
        else:
            out.append((f.name, f))
    return out


def test_every_key_has_a_meaning_and_the_shipped_files_hold_only_differences():
    for key, f in all_fields(Config()):
        assert f.metadata.get("help"), key
    defaults = Config().to_dict()
    for name in ("demo", "occ3d"):
        data = tomllib.loads((resources.files("renderocc") / "configs" / f"{name}.toml").read_text())
        for table, values in data.items():
            for k, v in (values.items() if isinstance(values, dict) else [(None, values)]):
                default = defaults[table] if k is None else defaults[table][k]
                assert json.loads(json.dumps(v)) != default, f"{name}.toml repeats the default {table}.{k}"


def test_overrides_are_parsed_and_typed():
    cfg = load_config("demo", ["optim.lr=1e-3", "data.rays=8192", "data.flip=false", "render.backend=reference",
                               "data.input_size=[64, 32]", "data.holdout=every-k:3", "supervision='mixed'",
                               "loss.class_weights=none", "grid.voxel_size=[0.8, 0.8, 0.4]"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.data.rays == 8192 and cfg.data.flip is False and cfg.render.backend == "reference"
    assert cfg.data.input_size == (64, 32) and cfg.data.holdout == "every-k:3" and cfg.supervision == "mixed"
    assert cfg.loss.class_weights == "none" and cfg.grid.voxel_size == [0.8, 0.8, 0.4]
    assert load_config("demo", ["optim.lr=1"]).optim.lr == 1.0  # an int where a float is declared
    assert parse_value('"a true story"') == "a true story"  # quoted strings are left alone


@pytest.mark.parametrize("item, message", [
    ("data.rays=abc", "data.rays expects int, got 'abc'"),
    ("optim.lr=fast", "optim.lr expects float, got 'fast'"),
    ("data.flip=1", "data.flip expects bool, got 1"),
    ("render.backend=gpu", "render.backend expects one of 'auto', 'cpu', 'cuda', 'reference', got 'gpu'"),
    ("data.input_size=[1, 2, 3]", "data.input_size expects [int, int], got [1, 2, 3]"),
    ("data.rays=0", "data.rays must be ≥ 1, got 0"),
    ("render.step=0", "render.step must be > 0, got 0"),
    ("data.holdout=sometimes", "data.holdout expects auto | last-scene | every-k:N | none, got 'sometimes'"),
    ("optim.lrr=1", "unknown key"),
    ("nothing.x=1", "no table 'nothing'"),
    ("data.rays", "expected key=value"),
])
def test_bad_overrides_are_one_line_user_errors(item, message):
    with pytest.raises(UserError) as e:
        load_config("demo", [item])
    assert message in e.value.message and "\n" not in e.value.message


def test_bad_config_file_names_the_file_and_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[optim]\nlr = 'fast'\n")
    with pytest.raises(UserError, match=rf"--config {p}: optim.lr expects float"):
        load_config(str(p))
    p.write_text("[optim]\nlrr = 1.0\n")
    with pytest.raises(UserError, match="unknown key optim.lrr"):
        load_config(str(p))
    p.write_text("optim = 3\n")
    with pytest.raises(UserError, match="optim must be a table"):
        load_config(str(p))


def test_plain_data_round_trip_and_grid_resolution():
    cfg = resolved(load_config("demo"), STORE_GRID)
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data  # JSON-able: lists, numbers, strings, bools, None
    assert Config.from_dict(data) == cfg and cfg.digest() == Config.from_dict(data).digest()
    assert cfg.grid == GridConfig(pc_range=list(STORE_GRID.box), voxel_size=[0.8, 0.8, 0.4], shape=[100, 100, 16])
    assert cfg.grid.spec == Grid(STORE_GRID.box, (0.8, 0.8, 0.4), (100, 100, 16))
    with pytest.raises(UserError, match="does not tile"):
        model_grid(load_config("demo", ["grid.voxel_size=0.7"]), STORE_GRID)
    with pytest.raises(RuntimeError, match="not resolved"):
        _ = load_config("demo").grid.spec


def test_precision_sets_the_autocast_dtype_and_the_scaler_together():
    import torch

    from renderocc.train.precision import autocast_dtype, uses_scaler

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert autocast_dtype(load_config("demo"), cuda) == torch.bfloat16 and not uses_scaler(load_config("demo"), cuda)
    fp16 = load_config("demo", ["train.precision=fp16"])
    assert autocast_dtype(fp16, cuda) == torch.float16 and uses_scaler(fp16, cuda)
    fp32 = load_config("demo", ["train.precision=fp32"])
    assert autocast_dtype(fp32, cuda) is None and not uses_scaler(fp32, cuda)
    assert autocast_dtype(fp16, cpu) is None and not uses_scaler(fp16, cpu)  # the CPU trains in fp32


def test_a_saved_config_with_the_old_amp_switch_still_loads():
    from renderocc.config import Config

    data = load_config("demo").to_dict()
    del data["train"]["precision"]
    assert Config.from_dict({**data, "train": {**data["train"], "amp": True}}).train.precision == "fp16"
    assert Config.from_dict({**data, "train": {**data["train"], "amp": False}}).train.precision == "fp32"
    with pytest.raises(UserError, match="precision"):
        load_config("demo", ["train.precision=fp8"])


def test_print_config_and_exit_codes():
    from renderocc.cli import main

    res = CliRunner().invoke(main, ["train", "--print-config", "--set", "data.rays=8192"])
    assert res.exit_code == 0, res.output
    assert "rays = 8192" in res.output and "# label rays rendered per sample" in res.output
    assert "[loss]" in res.output and "backend = \"auto\"" in res.output
    res = CliRunner().invoke(main, ["train", "--print-config", "--set", "optim.lr=fast"])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        "Error: --set optim.lr=fast: optim.lr expects float, got 'fast'"]
    res = CliRunner().invoke(main, ["train", "--store", "x"])
    assert res.exit_code == 2 and "--out" in res.output


def test_cli_bad_value_is_one_line_not_a_traceback():
    out = subprocess.run([sys.executable, "-m", "renderocc.cli", "train", "--store", "s", "--out", "o",
                          "--set", "data.rays=abc"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "Error: --set data.rays=abc: data.rays expects int, got 'abc'"


def test_the_renderocc_preset_holds_the_official_recipe():
    cfg = load_config("renderocc")
    assert (cfg.data.rays, cfg.data.aux_frames, cfg.data.aux_weight) == (38400, 3, 0.3)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip, cfg.optim.global_batch) == (1e-4, 1e-2, 5.0, 16)
    assert cfg.optim.schedule == "constant" and cfg.optim.warmup_steps == 200 and cfg.data.bev_flip
    assert round(cfg.train.max_steps * cfg.optim.global_batch / 28130, 2) == 12  # 12 epochs of nuScenes training
    assert tuple(cfg.data.input_size) == (1408, 512) and cfg.model.encoder.startswith("timm:swin_base")
    table = (resources.files("renderocc").parent / "docs" / "recipe.md").read_text()
    for setting in ("weight_adj", "bda_aug_conf", "load_from", "test_threshold", "entropy_last"):
        assert setting in table or setting.replace("_", " ") in table, setting
