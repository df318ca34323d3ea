"""The one config schema: every key, its type, its default and what it means, declared once.

A run's config is a `Config` (frozen dataclasses, one per TOML table). The defaults are the full
Occ3D setting for GPUs; the shipped TOML files (renderocc/configs/) hold only what differs
from them, and `--set section.key=value` overrides are parsed as TOML values, type-checked and
range-checked here, so a bad value is one line naming the key, the expected type and the value.
Unknown keys are errors (typos must not pass). `Config.to_dict()` is plain JSON-able data: that
is what checkpoints and config.json store, and `Config.from_dict` reads it back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from renderocc.errors import UserError
from renderocc.geometry import Grid, GridError, Scoring

Supervision = Literal["2d", "lidar-sparse", "3d", "mixed"]
SUPERVISIONS: tuple[str, ...] = typing.get_args(Supervision)
SHIPPED = ("demo", "occ3d", "renderocc")


def _opt(default: Any, help: str, *, ge: float | None = None, gt: float | None = None,
         le: float | None = None, pattern: str | None = None) -> Any:
    """A field with its one-line meaning and optional bounds (checked when a config is built)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "pattern": pattern}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class GridConfig:
    """The model's voxel grid. pc_range/voxel_size default to the store's; shape always follows.

    Checked against the store's label grid when a run starts (`geometry.Grid.coarsens`)."""

    pc_range: list[float] | None = _opt(None, "xmin, ymin, zmin, xmax, ymax, zmax in metres (default: the store's)")
    voxel_size: float | list[float] | None = _opt(
        None, "voxel edge(s) in metres; must tile the range, and be whole multiples of the store's (labels pooled) "
              "or at most the store's over its whole box (values interpolated) (default: the store's)")
    shape: list[int] | None = _opt(None, "voxels per axis: derived from the store when a run starts; never set it")

    @property
    def spec(self) -> Grid:
        """The model's `Grid` (a resolved config only: `resolved()` fills it from the store)."""
        if self.shape is None or self.pc_range is None or not isinstance(self.voxel_size, list):
            raise RuntimeError("grid not resolved against a store yet (call resolved())")
        return Grid(self.pc_range, self.voxel_size, self.shape)


@dataclass(frozen=True)
class DataConfig:
    """What one training sample holds and how it is drawn."""

    input_size: tuple[int, int] = _opt((704, 256), "W, H fed to the network (after augmentation)", ge=8)
    resize_range: tuple[float, float] = _opt((0.94, 1.11), "random scale around 'fit the stored image into input_size'",
                                             gt=0)
    flip: bool = _opt(True, "random horizontal flip (intrinsics follow)")
    bev_flip: bool = _opt(False, "BEV augmentation (training only): mirror the grid frame in x and in y, each with "
                                 "probability ½, about the box centre; features, rays and 3D targets follow "
                                 "(renderocc/train/bev_aug.py; BEVDet/RenderOcc recipe: true)")
    bev_rotate: float = _opt(0.0, "BEV augmentation: rotate the grid frame about z by a uniform angle within ± this "
                                  "many degrees (0: none; BEVDet recipe: 22.5)", ge=0, le=180)
    bev_scale: tuple[float, float] = _opt((1.0, 1.0), "BEV augmentation: scale the grid frame in x and y by a "
                                                      "uniform factor in [min, max] ([1, 1]: none; BEVDet recipe: "
                                                      "[0.95, 1.05])", gt=0)
    rays: int = _opt(38400, "label rays rendered per sample (RenderOcc: 38,400)", ge=1)
    aux_frames: int = _opt(3, "±K adjacent keyframes whose labels add auxiliary rays (0: key frame only)", ge=0)
    aux_weight: float = _opt(0.5, "sampling weight of an auxiliary ray relative to a key ray", ge=0)
    aux_without_motion_masks: Literal["drop", "keep"] = _opt(
        "drop", "aux rays when the store has no `dynamic` flags: drop them, or keep (moving objects smear)")
    use_motion_masks: bool = _opt(True, "drop aux labels on moving objects (false: keep them; an ablation)")
    free_beams: int = _opt(1024, "key-frame LiDAR beams without a return drawn per sample for loss.free_beams "
                                 "(0: none, the term is off)", ge=0)
    mask_ray_share: float = _opt(
        0.0, "share of data.rays drawn from the store's dense 2D masks (prep masks): class only, no depth, "
             "so rendered-semantics CE alone (0: LiDAR label rays only)", ge=0, le=1)
    lidar_classes: Literal["lidarseg", "masks", "none"] = _opt(
        "lidarseg", "class of a LiDAR label ray: its lidarseg label, the store's dense mask at its pixel "
                    "(data without lidarseg), or none (depth only)")
    class_balance: float = _opt(0.5, "ray sampling weight ∝ count(class)^-class_balance within a sample", ge=0)
    holdout: str = _opt("auto", "samples held out of training for the threshold: auto | last-scene | every-k:N | none",
                        pattern=r"auto|last-scene|none|every-k:[1-9][0-9]*")
    workers: int = _opt(6, "DataLoader worker processes", ge=0)
    batch_size: int = _opt(1, "samples per process and step", ge=1)


@dataclass(frozen=True)
class ModelConfig:
    """OccupancyNet: ResNet → LSS lift-splat → 3D U-Net → density + semantic heads."""

    encoder: str = _opt("resnet34", "image backbone: resnet10 | resnet18 | resnet34 | timm:NAME (a timm model with a "
                                    "stride-8 stage, e.g. timm:resnet50, timm:convnext_base, "
                                    "timm:swin_base_patch4_window7_224; needs timm)",
                        pattern=r"resnet10|resnet18|resnet34|timm:[A-Za-z0-9_.\-]+")
    width: int = _opt(64, "channels of the backbone's first stage", ge=1)
    norm: Literal["gn", "frozen_bn"] = _opt("frozen_bn", "backbone norm: frozen_bn with --pretrained, gn from scratch "
                                                       "(plain ResNet only; timm backbones: frozen_bn)")
    channels: int = _opt(128, "image feature channels after the neck", ge=1)
    voxel_channels: int = _opt(32, "channels of the lifted voxel features and the 3D encoder", ge=1)
    blocks3d: int = _opt(2, "conv blocks per 3D U-Net level", ge=1)
    depth_bins: tuple[float, float, int] = _opt((1.0, 45.0, 88), "LSS depth bins: min, max (m), count", gt=0)
    density_init: float = _opt(0.1, "initial density everywhere (1/m): a thin fog rays neither ignore nor stop in",
                               gt=0)
    pos_channels: bool = _opt(False, "voxel x, y, z as 3D-encoder inputs (a height prior the convs can learn)")
    density_gain: float = _opt(1.0, "density = softplus(gain · head output)", gt=0)
    splat_mass: bool = _opt(False, "add log(1 + depth probability mass) per voxel as a feature")


@dataclass(frozen=True)
class RenderConfig:
    """How rays are marched through the predicted grid (see renderocc/geometry/sampling.py)."""

    step: float = _opt(0.2, "metres between ray samples", gt=0)
    near: float = _opt(0.0, "no samples closer than this to the ray origin (m)", ge=0)
    backend: Literal["auto", "cpu", "cuda", "reference"] = _opt(
        "auto", "renderer: the compiled kernel for the tensors' device, or the PyTorch reference")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (0 disables a term) and their parameters; see renderocc/train/losses.py."""

    depth: float = _opt(1.0, "SILog on rendered metric ray distance", ge=0)
    depth_absrel: float = _opt(0.0, "|d̂ − d| / d on the same distance (SILog alone forgives scale)", ge=0)
    semantic: float = _opt(1.0, "class-weighted CE on rendered semantics", ge=0)
    mask_semantics: Literal["rendered", "surface"] = _opt(
        "surface", "where a dense-mask ray (no depth) puts its class: surface = the CE of the logits "
                   "interpolated where the ray stops (its median depth; rays that never reach T ≤ ½ "
                   "ignored), the surface the LiDAR rays shaped; rendered = the CE of the ray's "
                   "weight-blended logits (every voxel the weights touch, fog in front included). "
                   "Fit, airside, 3 seeds: +0.7 (masks) and +1.3 (both) mIoU over rendered")
    distortion: float = _opt(0.002, "Mip-NeRF 360 distortion of the ray weights", ge=0)
    freespace: float = _opt(0.0, "empty before the labelled hit: optical depth per unit length up to "
                                 "(1 − los_margin_rel)·d − margin", ge=0)
    termination: float = _opt(0.0, "the ray stops by d + margin: −log(1 − T(d + margin))", ge=0)
    termination_window: bool = _opt(
        False, "termination counts only the optical depth between the free-space end and d + margin "
               "(the ray stops at its label); false: from the origin, which fog in front satisfies")
    free_beams: float = _opt(1.0, "LiDAR beams without a return are empty inside the grid: optical depth per "
                                  "unit length along them (needs a store with free beams)", ge=0)
    los_margin: float = _opt(1.0, "margin of freespace and termination, in voxels", ge=0)
    los_margin_rel: float = _opt(0.0, "free space ends at (1 − rel)·d − margin (grazing ground rays)", ge=0)
    sparsity: float = _opt(0.0, "label-free prior: mean σ·voxel over the whole grid", ge=0)
    label_voxels: float = _opt(
        0.0, "the sample's label rays (key + aux) read voxel-exactly, as the 3D loss: a voxel holding an end "
             "point occupied (the end points' majority class), voxels the rays cross before it free", ge=0)
    lss_depth: float = _opt(0.2, "CE of the LSS depth distribution against LiDAR depth", ge=0)
    occ3d: float = _opt(1.0, "3D voxel loss (lidar-sparse / 3d / mixed contracts)", ge=0)
    occ3d_mask: Literal["camera", "lidar", "none"] = _opt(
        "camera", "3d / mixed: dense GT voxels the occ3d loss sees: inside mask_camera (inflates masked "
                  "mIoU; UniOcc 19.6 -> 36.1), inside mask_lidar, or all (none)")
    class_weights: Literal["auto", "none"] | list[float] = _opt(
        "auto", "auto (from label frequencies) | none | one number per semantic class")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup and cosine decay, gradient clipping, EMA of the weights."""

    lr: float = _opt(2e-4, "peak learning rate", gt=0)
    weight_decay: float = _opt(1e-2, "AdamW weight decay", ge=0)
    warmup_steps: int = _opt(500, "linear warmup steps", ge=0)
    schedule: Literal["cosine", "constant"] = _opt(
        "cosine", "after warmup: cosine decay to 1 % at train.max_steps, or constant (RenderOcc's step "
                  "schedule never steps within its 12 epochs)")
    grad_clip: float = _opt(5.0, "max gradient norm", gt=0)
    ema_decay: float = _opt(0.9998, "EMA decay of the weights evaluated and saved", ge=0)
    global_batch: int = _opt(0, "samples per optimiser step over all processes, reached by gradient "
                                "accumulation (a multiple of data.batch_size × processes; 0: one batch per process)",
                             ge=0)


@dataclass(frozen=True)
class TrainConfig:
    """Run length, logging, checkpoints, precision."""

    max_steps: int = _opt(42000, "optimiser steps (~12 epochs of 28k samples at 8 GPUs × 1)", ge=1)
    log_every: int = _opt(50, "steps between metrics.jsonl records", ge=1)
    ckpt_every: int = _opt(2000, "steps between checkpoints (and threshold choices)", ge=1)
    precision: Literal["bf16", "fp16", "fp32"] = _opt(
        "bf16", "GPU compute precision: bf16 autocast (no scaler), fp16 autocast + GradScaler, or fp32; "
                "the CPU always trains in fp32")
    compile: bool = _opt(False, "torch.compile the network (the losses and renderer stay eager)")
    val_every: int = _opt(0, "steps between validations on the held-out samples (0: none; the last step "
                             "validates when > 0)", ge=0)
    val_samples: int = _opt(16, "held-out samples each validation scores (evenly spaced)", ge=1)
    val_rays: int = _opt(20000, "label rays per sample rendered for the 2D validation metrics (0: all)", ge=0)
    val_metric: str = _opt("auto", "what best.pt maximises: auto (miou with 3D GT, else sem2d_miou) | miou | "
                                   "geometry_iou | rayiou | sem2d_miou | depth_abs_rel (minimised)",
                           pattern=r"auto|miou|geometry_iou|rayiou|sem2d_miou|depth_abs_rel")
    loader_bench_batches: int = _opt(4, "batches timed through the loader alone before training (0: skip)", ge=0)
    threshold_samples: int = _opt(64, "held-out samples used to choose the occupancy threshold", ge=1)


@dataclass(frozen=True)
class DtsConfig:
    """Learning from unlabelled camera frames (the store's camera sweeps): UniOcc's depth-aware
    teacher–student. The teacher is the run's EMA (started from `--init-from`); on an unlabelled frame
    it sees the LiDAR depth injected into its lift, and its confident voxels become the student's 3D
    targets, beside the frame's own depth rays."""

    enabled: bool = _opt(False, "train on the store's camera sweeps too (unlabelled: depth rays, and the "
                                "teacher's voxels when pseudo_weight > 0)")
    teacher_depth: bool = _opt(True, "the teacher's lift takes the frame's LiDAR depth (DTS); false: it "
                                     "predicts its own depth, as the student does (plain Mean Teacher)")
    unlabelled_ratio: float = _opt(1.0, "unlabelled frames per labelled frame in each batch (UniOcc: 1:1)",
                                   gt=0, le=8)
    confidence: float = _opt(0.7, "an occupied teacher voxel is a target only when its top class's "
                                  "probability is at least this", gt=0, le=0.999)
    density_margin: float = _opt(2.0, "a teacher voxel is an occupied target when its density ≥ this × the "
                                      "teacher's occupancy threshold (the one eval uses), a free target when ≤ "
                                      "the threshold ÷ this; voxels between are ignored", ge=1)
    pseudo_weight: float = _opt(1.0, "weight of the teacher's 3D targets on unlabelled frames (0: their "
                                     "depth rays only, no teacher)", ge=0)
    depth_rays: bool = _opt(True, "render the unlabelled frames' LiDAR depth rays (the labelled frames' "
                                  "depth terms and weights)")


@dataclass(frozen=True)
class Config:
    """A whole run. Tables: grid, data, model, render, loss, optim, train, dts."""

    seed: int = _opt(0, "seeds Python, NumPy, torch and every sample's augmentation and ray draw")
    supervision: Supervision = _opt("2d", "which labels train the model: 2d | lidar-sparse | 3d | mixed")
    grid: GridConfig = field(default_factory=GridConfig, metadata={"help": "the model's voxel grid"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "samples and rays"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the network"})
    render: RenderConfig = field(default_factory=RenderConfig, metadata={"help": "ray marching"})
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "loss weights"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "optimiser"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "run length and logging"})
    dts: DtsConfig = field(default_factory=DtsConfig, metadata={"help": "unlabelled camera frames "
                                                                        "(teacher–student)"})

    def to_dict(self) -> dict:
        """Plain JSON-able data (lists, not tuples): what checkpoints and config.json hold."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> Config:
        """Build and check a config from nested plain data; missing keys take their defaults. A
        resolved grid (shape given: checkpoints, config.json) must be a valid `Grid`."""
        cfg = _build(cls, _migrated(data), "", where)
        _check_ranges(cfg, where)
        if cfg.grid.shape is not None:
            try:
                cfg.grid.spec  # noqa: B018 - builds and checks the Grid
            except (GridError, RuntimeError) as e:
                raise UserError(f"{where}: grid: {e}") from None
        return cfg

    def digest(self) -> str:
        """Short hash of the resolved config (results files record it beside the git commit)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> Config:
        """A copy with `table={key: value}` or top-level `key=value` changes, checked like overrides."""
        data = self.to_dict()
        for k, v in changes.items():
            if isinstance(v, dict):
                data[k].update(v)
            else:
                data[k] = v
        return Config.from_dict(data)


# -- building and checking ---------------------------------------------------------------------
def _migrated(data: Any) -> Any:
    """Configs saved by earlier versions, in today's keys: `train.amp` (fp16 autocast on or off) is
    `train.precision` now."""
    train = data.get("train") if isinstance(data, dict) else None
    if isinstance(train, dict) and "amp" in train and "precision" not in train and isinstance(train["amp"], bool):
        train = {k: v for k, v in train.items() if k != "amp"} | {"precision": "fp16" if train["amp"] else "fp32"}
        data = {**data, "train": train}
    return data


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """`value` as type `tp` (ints widen to float, lists become tuples where declared) or _Mismatch."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _coerce(value, arm)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _Mismatch
        if origin is tuple:
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
        return [_coerce(v, args[0]) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"config schema: unsupported type {tp!r}")


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    return [x for v in value for x in _numbers(v)] if isinstance(value, list | tuple) else []


def _check_field(f: dataclasses.Field, tp: Any, value: Any, key: str, where: str) -> Any:
    try:
        v = _coerce(value, tp)
    except _Mismatch:
        raise UserError(f"{where}: {key} expects {_type_name(tp)}, got {value!r}") from None
    meta = f.metadata
    nums = _numbers(v)
    if any(not math.isfinite(x) for x in nums):
        raise UserError(f"{where}: {key} must be finite, got {value!r}")
    if meta.get("ge") is not None and any(x < meta["ge"] for x in nums):
        raise UserError(f"{where}: {key} must be ≥ {meta['ge']:g}, got {value!r}")
    if meta.get("gt") is not None and any(x <= meta["gt"] for x in nums):
        raise UserError(f"{where}: {key} must be > {meta['gt']:g}, got {value!r}")
    if meta.get("le") is not None and any(x > meta["le"] for x in nums):
        raise UserError(f"{where}: {key} must be ≤ {meta['le']:g}, got {value!r}")
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], v):
        raise UserError(f"{where}: {key} expects {meta['help'].split(': ', 1)[-1]}, got {value!r}")
    return v


def _build(cls: type, data: Any, prefix: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{where}: {prefix.rstrip('.') or 'the config'} must be a table, got {data!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown key {prefix}{unknown[0]} "
                        f"(known{' in [' + prefix.rstrip('.') + ']' if prefix else ''}: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.", where)
        else:
            kwargs[name] = _check_field(fields[name], tp, value, prefix + name, where)
    return cls(**kwargs)


def _check_ranges(cfg: Config, where: str) -> None:
    """What one key's bounds cannot say: a (min, max) pair must have min < max."""
    lo, hi, _ = cfg.model.depth_bins
    if lo >= hi:
        raise UserError(f"{where}: model.depth_bins min {lo:g} must be below max {hi:g}")
    if cfg.data.resize_range[0] > cfg.data.resize_range[1]:
        raise UserError(f"{where}: data.resize_range {list(cfg.data.resize_range)}: min above max")
    if cfg.data.bev_scale[0] > cfg.data.bev_scale[1]:
        raise UserError(f"{where}: data.bev_scale {list(cfg.data.bev_scale)}: min above max")


# -- loading -----------------------------------------------------------------------------------
def parse_value(raw: str) -> Any:
    """An override's value as a TOML value (`1e-3`, `true`, `[1, 2]`, `"x"`); bare words stay strings."""
    raw = raw.strip()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_override(data: dict, item: str) -> None:
    """`a.b=value` into nested plain data; the key must exist in the schema (checked on build)."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    cls: type = Config
    node = data
    for p in parts[:-1]:
        sub = _hints(cls).get(p)
        if sub is None or not dataclasses.is_dataclass(sub):
            tables = [name for name, tp in _hints(Config).items() if dataclasses.is_dataclass(tp)]
            raise UserError(f"--set {key}: no table {p!r} in the config (tables: {', '.join(tables)})")
        cls = sub
        node = node.setdefault(p, {})
    names = [f.name for f in dataclasses.fields(cls)]
    if parts[-1] not in names or dataclasses.is_dataclass(_hints(cls)[parts[-1]]):
        raise UserError(f"--set {key}: unknown key (known here: {', '.join(names)})")
    node[parts[-1]] = parse_value(raw)
    try:
        _build(cls, {parts[-1]: node[parts[-1]]}, ".".join(parts[:-1]) + "." if len(parts) > 1 else "", "--set")
    except UserError as e:
        raise UserError(f"--set {item.strip()}: {str(e.message).split(': ', 1)[1]}") from None


def config_text(name_or_path: str | None) -> tuple[str, str]:
    """(TOML text, display name) of a shipped config (`demo`, `occ3d`) or a TOML file."""
    name = name_or_path or "demo"
    path = Path(name)
    if path.is_file():
        try:
            return path.read_text(), name
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--config {name}: cannot read ({e.__class__.__name__})") from None
    res = resources.files("renderocc") / "configs" / f"{name}.toml"
    if not res.is_file():
        raise UserError(f"--config {name}: not a file and not a shipped config ({', '.join(SHIPPED)})")
    return res.read_text(), name


def load_config(name_or_path: str | None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """A shipped config or TOML file on top of the defaults, then `key=value` overrides."""
    text, name = config_text(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"--config {name}: invalid TOML: {e}") from None
    Config.from_dict(data, f"--config {name}")  # the file alone must be valid: errors name the file
    for item in overrides:
        apply_override(data, item)
    return Config.from_dict(data, f"--config {name}")


def describe(cfg: Config) -> str:
    """The resolved config as TOML-like text, one commented line per key (`train --print-config`)."""
    lines = []
    top = [f for f in dataclasses.fields(Config) if not dataclasses.is_dataclass(_hints(Config)[f.name])]
    for f in top:
        lines.append(_line(f.name, getattr(cfg, f.name), f.metadata["help"]))
    for f in dataclasses.fields(Config):
        if f in top:
            continue
        lines += ["", f"[{f.name}]"]
        table = getattr(cfg, f.name)
        for g in dataclasses.fields(table):
            lines.append(_line(g.name, getattr(table, g.name), g.metadata["help"]))
    return "\n".join(lines)


def _line(key: str, value: Any, help: str) -> str:
    text = f"{key} = {_toml(value)}"
    return f"{text:<40} # {help}"


def _toml(value: Any) -> str:
    if value is None:
        return '"store"'  # shown, not parsed: the default follows the store
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def supervision_label(cfg: Config) -> str:
    """The contract as reports state it: `3d`/`mixed` name the GT mask their voxel loss used,
    because it changes what a masked mIoU means."""
    label = cfg.supervision
    if cfg.supervision in ("3d", "mixed"):
        where = {"camera": "inside mask_camera", "lidar": "inside mask_lidar", "none": "all voxels"}
        label = f"{cfg.supervision} (dense GT {where[cfg.loss.occ3d_mask]})"
    return label + unlabelled_label(cfg)


def unlabelled_label(cfg: Config) -> str:
    """What the unlabelled camera frames add to the contract ("" without them)."""
    d = cfg.dts
    if not d.enabled:
        return ""
    if d.pseudo_weight == 0:
        return " + camera sweeps (depth rays)"
    teacher = "DTS (depth-aware teacher)" if d.teacher_depth else "Mean Teacher"
    return f" + {teacher} on camera sweeps"


SemanticSource = Literal["lidarseg", "masks", "both", "none"]


def semantic_source(cfg: Config, store_has_lidarseg: bool = True) -> SemanticSource | None:
    """Which 2D semantic labels train the rendered semantics (part of the supervision contract):
    lidarseg (LiDAR label rays' lidarseg classes), masks (`data.mask_ray_share` of the rays from the
    dense masks, or LiDAR rays classed by the mask at their pixel), both, or none. None for `3d`,
    which renders no label rays."""
    if cfg.supervision == "3d":
        return None
    lidar = cfg.data.lidar_classes == "lidarseg" and store_has_lidarseg
    masks = cfg.data.mask_ray_share > 0 or cfg.data.lidar_classes == "masks"
    return "both" if lidar and masks else "masks" if masks else "lidarseg" if lidar else "none"


# -- the grid ---------------------------------------------------------------------------------
def model_grid(cfg: Config, store_grid: Grid) -> Grid:
    """The model's voxel grid: the store's box and voxel unless the config sets its own, checked to
    tile its box and to be scorable against the store's label grid (`Grid.coarsens`): a grid that
    cannot be trained or scored is one line before any work, whatever the supervision."""
    g = cfg.grid
    box = g.pc_range if g.pc_range is not None else store_grid.box
    voxel = g.voxel_size if g.voxel_size is not None else store_grid.voxel
    try:
        grid = Grid.tiling(box, voxel)
        grid.coarsens(store_grid)
    except GridError as e:
        raise UserError(f"grid.voxel_size / grid.pc_range: {e}") from None
    return grid


MAX_SAMPLES_PER_RAY = 1 << 16   # box diagonal / render.step: the Occ3D box at 0.2 m takes 566
RAY_BYTES_PER_CLASS = 16          # forward and backward state of one rendered ray, per semantic class (float32)


def physical_memory() -> int | None:
    """This machine's RAM in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_resources(cfg: Config, grid: Grid, num_classes: int = 18) -> None:
    """Refuse, with the estimate, settings that would march forever or exhaust memory: samples per
    ray (box diagonal over render.step), and the rendered rays' state per step against the RAM."""
    diagonal = math.dist(grid.box[:3], grid.box[3:])
    samples = diagonal / cfg.render.step
    if samples > MAX_SAMPLES_PER_RAY:
        raise UserError(f"render.step {cfg.render.step:g} m: up to {samples:,.0f} samples per ray across the "
                        f"{diagonal:.0f} m grid (at most {MAX_SAMPLES_PER_RAY:,}): use a larger step")
    ray_bytes = cfg.data.rays * cfg.data.batch_size * RAY_BYTES_PER_CLASS * (num_classes + 8)
    ram = physical_memory()
    if ram is not None and ray_bytes > ram:
        raise UserError(f"data.rays {cfg.data.rays:,} × data.batch_size {cfg.data.batch_size}: the rendered rays "
                        f"alone need ~{ray_bytes / 2**30:,.0f} GiB per step, more than this machine's "
                        f"{ram / 2**30:,.0f} GiB")


def resolved(cfg: Config, store_grid: Grid) -> Config:
    """The config with the model grid filled in from the store (what checkpoints save), checked
    against the store's label grid and the machine's resources."""
    grid = model_grid(cfg, store_grid)
    check_resources(cfg, grid)
    rec = grid.to_record()
    return dataclasses.replace(cfg, grid=GridConfig(rec["pc_range"], rec["voxel_size"], rec["shape"]))


def scoring(cfg: Config, store_grid: Grid) -> Scoring:
    """How a resolved config's model grid meets the store's label grid (pool, interpolate or same)."""
    return cfg.grid.spec.coarsens(store_grid)
