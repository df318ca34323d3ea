"""One TOML config per run, `--set section.key=value` overrides, and the model grid it implies.

No inheritance and no registry: a config is a plain nested dict; `demo` and `occ3d` name the
files shipped in renderocc/configs/. Unknown override keys are errors (typos must not pass).
"""

from __future__ import annotations

import ast
import copy
import tomllib
from importlib import resources
from pathlib import Path

from renderocc.errors import UserError

SUPERVISIONS = ("2d", "lidar-sparse", "3d", "mixed")


def load_config(name_or_path: str | None, overrides: tuple[str, ...] | list[str] = ()) -> dict:
    """Read a shipped config (`demo`, `occ3d`) or a TOML file, then apply `key=value` overrides."""
    name = name_or_path or "demo"
    path = Path(name)
    if path.is_file():
        text = path.read_text()
    else:
        res = resources.files("renderocc") / "configs" / f"{name}.toml"
        if not res.is_file():
            raise UserError(f"--config {name}: not a file and not a shipped config (demo, occ3d)")
        text = res.read_text()
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"--config {name}: invalid TOML: {e}") from None
    for item in overrides:
        apply_override(cfg, item)
    if cfg.get("supervision", "2d") not in SUPERVISIONS:
        raise UserError(f"supervision {cfg.get('supervision')!r}: choose one of {', '.join(SUPERVISIONS)}")
    return cfg


def apply_override(cfg: dict, item: str) -> None:
    """`a.b=value`: value parsed as a Python/TOML-ish literal, else kept as a string."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise UserError(f"--set {key}: no section {p!r} in the config")
        node = node[p]
    if parts[-1] not in node:
        raise UserError(f"--set {key}: unknown key (known here: {', '.join(sorted(node))})")
    lit = raw.strip().replace("true", "True").replace("false", "False")
    try:
        value = ast.literal_eval(lit)
    except (ValueError, SyntaxError):
        value = raw.strip()
    node[parts[-1]] = value


def model_grid(cfg: dict, store_grid: dict) -> dict:
    """The model's voxel grid: the store's range, at the config's voxel size if it sets one.

    A coarser voxel must divide the store's voxel grid evenly so dense 3D labels can be pooled.
    """
    pc_range = [float(v) for v in cfg.get("grid", {}).get("pc_range", store_grid["pc_range"])]
    vs = cfg.get("grid", {}).get("voxel_size", store_grid["voxel_size"])
    vs = [float(vs)] * 3 if isinstance(vs, int | float) else [float(v) for v in vs]
    shape = [round((pc_range[i + 3] - pc_range[i]) / vs[i]) for i in range(3)]
    for i in range(3):
        if abs(shape[i] * vs[i] - (pc_range[i + 3] - pc_range[i])) > 1e-4:
            raise UserError(f"grid.voxel_size {vs[i]} does not tile the range {pc_range} on axis {i}")
    return {"pc_range": pc_range, "voxel_size": vs, "shape": shape}


def resolved(cfg: dict, store_grid: dict) -> dict:
    """A copy of the config with the model grid filled in (what is saved in checkpoints)."""
    out = copy.deepcopy(cfg)
    out["grid"] = model_grid(cfg, store_grid)
    out["model"]["grid"] = out["grid"]
    return out
