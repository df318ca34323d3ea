"""Unlabelled camera frames in training (`[dts]`): UniOcc's depth-aware teacher–student.

The store's camera sweeps are frames between the keyframes with images, poses and LiDAR depth rays
but no semantics. Each optimiser micro-batch pairs labelled keyframes with `dts.unlabelled_ratio` ×
as many sweeps. A sweep trains the student (the network being optimised) with

- its depth rays, through the labelled frames' own depth terms and weights (`dts.depth_rays`);
- the teacher's voxels (`dts.pseudo_weight` > 0): the teacher is the run's EMA of the student,
  started from `--init-from`; it sees the sweep with its LiDAR depth injected into the lift
  (`dts.teacher_depth`: the depth bin of every feature cell with a LiDAR return gets probability 1;
  false = plain Mean Teacher), and its confident voxels (`pseudo_targets`) become the student's 3D
  targets under the same occupancy + class loss the dense 3D labels use.

Everything here is a function of (model, teacher, batch, config): the trainer owns the loaders and
the EMA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from renderocc.config import Config
from renderocc.errors import UserError
from renderocc.geometry import Scoring
from renderocc.model import OccupancyOutput
from renderocc.seeding import mix_seed
from renderocc.train import losses as L
from renderocc.train.dataset import RayDataset
from renderocc.train.step import LossFn, forward, to_device

UNLABELLED_SEED = 7919  # the unlabelled stream's seed offset: its draws never repeat the labelled ones
DEPTH_HINT = "depth_target"  # the batch key of the LiDAR depth per feature cell (the lift's target too)
RENDERED_DEPTH_TERMS = ("depth", "depth_absrel", "distortion", "freespace", "termination", "sparsity", "label_voxels")
DEFAULT_THRESHOLD = 0.5  # density (1/m) when no threshold was ever chosen (eval's fallback too)
LOG_FIELDS = ("unlabelled", "pseudo", "pseudo_share")  # what `unlabelled_terms` adds to a step's record


@dataclass
class Unlabelled:
    """A run's unlabelled frames: their dataset (the store's sweep frames), the sweep indices it
    draws from (those of the training keyframes), the per-rank batch and the config they use."""

    ds: RayDataset
    indices: list[int]
    batch: int
    cfg: Config


def unlabelled_config(cfg: Config) -> Config:
    """The config unlabelled frames are drawn and rendered with: the `2d` contract on their depth
    rays only (no classes, no auxiliary frames, no dense masks, no free beams), the run's depth-term
    weights (all rendered terms 0 with `dts.depth_rays = false`; the lift's depth loss stays)."""
    loss = {"semantic": 0.0, "free_beams": 0.0, "occ3d": 0.0}
    if not cfg.dts.depth_rays:
        loss.update({t: 0.0 for t in RENDERED_DEPTH_TERMS})
    return cfg.replace(supervision="2d", seed=mix_seed(cfg.seed, UNLABELLED_SEED),
                       data={"aux_frames": 0, "mask_ray_share": 0.0, "free_beams": 0, "lidar_classes": "none"},
                       loss=loss)


def check_dts(cfg: Config, num_sweeps: int, has_parent: bool, resumed: bool) -> None:
    """Refuse a `[dts]` run that cannot do what it says, in one line."""
    if not cfg.dts.enabled:
        return
    if num_sweeps == 0:
        raise UserError("dts.enabled: the store has no camera sweeps (unlabelled frames); prep it with "
                        "`renderocc prep nuscenes --camera-sweeps N`")
    if cfg.dts.pseudo_weight > 0 and not (has_parent or resumed):
        raise UserError("dts.pseudo_weight > 0: the teacher starts from a trained model: give --init-from CKPT "
                        "(or dts.pseudo_weight = 0 for the sweeps' depth rays only)")


def unlabelled_data(reader, cfg: Config, train_idx: list[int], feature_stride: int) -> Unlabelled:
    """The camera sweeps that follow the training keyframes (a held-out keyframe's sweeps are held
    out with it), as a dataset of the unlabelled config."""
    indices = [j for i in train_idx for j in reader.sweeps_of(i)]
    if not indices:
        raise UserError(f"dts.enabled: none of the {len(train_idx)} training keyframes of {reader.root} has "
                        "camera sweeps")
    cfg_u = unlabelled_config(cfg)
    ds = RayDataset(reader.sweep_frames(), cfg_u, indices, train=True, feature_stride=feature_stride,
                    extra_needs=(DEPTH_HINT,))
    return Unlabelled(ds, indices, max(1, round(cfg.dts.unlabelled_ratio * cfg.data.batch_size)), cfg_u)


def pseudo_targets(out: OccupancyOutput, threshold: float, margin: float, confidence: float) -> torch.Tensor:
    """uint8 (B, X, Y, Z) targets from a teacher's output, in the 3D loss's coding: class 0..C-1 where
    σ ≥ `margin` × `threshold` and the top class's probability ≥ `confidence`, C (free) where σ ≤
    `threshold` / `margin`, 255 (ignored) elsewhere.

    Relative to the teacher's occupancy threshold, not to P(occupied) = 1 − exp(−σ·voxel): a model
    trained by rendering has no reason to make that probability calibrated (the demo's 2D runs choose
    thresholds near σ = 0.2 /m, P ≈ 0.15), and an absolute rule turned most of its surfaces into free
    targets."""
    density = out.density.float()
    p_cls, cls = out.semantics.float().softmax(-1).max(-1)
    n_cls = out.semantics.shape[-1]
    target = torch.full_like(cls, 255)
    target = torch.where((density >= margin * threshold) & (p_cls >= confidence), cls, target)
    target = torch.where(density <= threshold / margin, torch.full_like(cls, n_cls), target)
    return target.to(torch.uint8)


@torch.no_grad()
def teacher_targets(teacher: torch.nn.Module, batch: dict, cfg: Config, device: torch.device,
                    threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """The teacher's confident voxels on an unlabelled batch (already on `device`), with the LiDAR
    depth injected into its lift when `dts.teacher_depth`; `threshold`: the teacher's occupancy
    threshold (density, 1/m)."""
    hint = batch[DEPTH_HINT] if cfg.dts.teacher_depth else None
    was_training = teacher.training
    teacher.eval()
    out = forward(teacher, batch, cfg, device, hint)
    teacher.train(was_training)
    return pseudo_targets(out, threshold, cfg.dts.density_margin, cfg.dts.confidence)


def unlabelled_terms(out: OccupancyOutput, batch: dict, teacher: torch.nn.Module | None, cfg: Config,
                     cfg_u: Config, cw: torch.Tensor | None, device: torch.device,
                     threshold: float = DEFAULT_THRESHOLD) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """(loss, logged parts, rays rendered) of the student's output `out` on an unlabelled batch: the
    depth terms of `cfg_u` plus `dts.pseudo_weight` × the 3D loss on the teacher's targets. Parts:
    `unlabelled` (the depth terms' sum), `pseudo` (the weighted teacher term) and `pseudo_share` (the
    share of voxels the teacher gave a target)."""
    loss, _, rays = L.total_loss(out, batch, cfg_u, None)
    parts = {"unlabelled": loss.detach()}
    if cfg.dts.pseudo_weight > 0 and teacher is not None:
        target = teacher_targets(teacher, batch, cfg, device, threshold)
        term = cfg.dts.pseudo_weight * L.occupancy_3d(out.density, out.semantics, target, cfg.grid.spec.edge, cw)
        loss = loss + term
        parts["pseudo"] = term.detach()
        parts["pseudo_share"] = (target != 255).float().mean()
    return loss, parts, rays


def paired_loss(teacher: torch.nn.Module | None, cfg: Config, cfg_u: Config, cw: torch.Tensor | None,
                device: torch.device, scoring: Scoring | None = None,
                threshold: Callable[[], float] = lambda: DEFAULT_THRESHOLD) -> LossFn:
    """The step's loss on a (labelled, unlabelled) micro-batch pair: one forward pass of the student
    over both (one graph, so DDP sees one forward per backward), the labelled batch's usual terms plus
    `unlabelled_terms`; `threshold()` gives the teacher's current occupancy threshold."""
    cw_dev = None if cw is None else cw.to(device)

    def loss_fn(model, pair: tuple[dict, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        labelled, unlabelled = to_device(pair[0], device), to_device(pair[1], device)
        n = labelled["images"].shape[0]
        joint = {k: torch.cat([labelled[k], unlabelled[k]]) for k in ("images", "intrinsics", "cam2ego")}
        out = forward(model, joint, cfg, device)
        out_l, out_u = OccupancyOutput(*(t[:n] for t in out)), OccupancyOutput(*(t[n:] for t in out))
        loss_l, parts_l, rays_l = L.total_loss(out_l, labelled, cfg, cw_dev, scoring)
        loss_u, parts_u, rays_u = unlabelled_terms(out_u, unlabelled, teacher, cfg, cfg_u, cw_dev, device,
                                                   threshold())
        return loss_l + loss_u, {**parts_l, **parts_u}, rays_l + rays_u

    return loss_fn
