"""The depth-aware teacher–student's rules on hand-built inputs: the teacher's confidence filter,
the LiDAR depth injected into the lift, the unlabelled frames' config and the run's contract line."""

from __future__ import annotations

import pytest
import torch
from tiny_run import tiny

from renderocc.config import supervision_label
from renderocc.errors import UserError
from renderocc.geometry import Grid
from renderocc.model import OccupancyOutput
from renderocc.model.view_transform import LiftSplat, depth_bin_index, with_depth
from renderocc.train.dts import check_dts, pseudo_targets, unlabelled_config
from renderocc.train.losses import lss_depth


def _out(density: list[float], class_probs: list[list[float]]) -> OccupancyOutput:
    """A 1 × len × 1 × 1 teacher output with the given densities and class probabilities."""
    d = torch.tensor(density).view(1, -1, 1, 1)
    logits = torch.log(torch.tensor(class_probs)).view(1, -1, 1, 1, len(class_probs[0]))
    return OccupancyOutput(d, logits, torch.zeros(1, 1, 1, 1, 1))


def test_pseudo_targets_keep_only_confident_voxels():
    thr, margin, conf = 0.2, 2.0, 0.7
    out = _out([0.5, 0.5, 0.3, 0.2, 0.1, 0.05],
               [[0.1, 0.8, 0.1], [0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05],
                [0.3, 0.3, 0.4]])
    t = pseudo_targets(out, thr, margin, conf).view(-1).tolist()
    # σ ≥ 2 × threshold with a confident class → the class; with an unsure class → ignored; between
    # threshold ÷ 2 and 2 × threshold → ignored; ≤ threshold ÷ 2 → free (C = 3) whatever the class says
    assert t == [1, 255, 255, 255, 3, 3]


def test_pseudo_target_boundaries_follow_the_threshold_and_margin():
    density = torch.tensor([0.39, 0.41, 0.11, 0.09]).view(1, 4, 1, 1)
    logits = torch.tensor([[0.0, 9.0]]).expand(4, 2).reshape(1, 4, 1, 1, 2)
    out = OccupancyOutput(density, logits, torch.zeros(1, 1, 1, 1, 1))
    assert pseudo_targets(out, 0.2, 2.0, 0.7).view(-1).tolist() == [255, 1, 255, 2]
    assert pseudo_targets(out, 0.2, 1.0, 0.7).view(-1).tolist() == [1, 1, 2, 2]   # margin 1: no gap


def test_injected_depth_is_one_hot_on_the_lift_loss_bin():
    bins = (1.0, 41.0, 21)
    prob = torch.rand(1, 2, 21, 3, 4).softmax(2)
    depth = torch.zeros(1, 2, 3, 4)
    depth[0, 0, 1, 2] = 13.3
    depth[0, 1, 0, 0] = 60.0   # beyond the bins: not injected
    got = with_depth(prob, depth, bins)
    idx, ok = depth_bin_index(depth, bins)
    assert ok.sum() == 1 and int(idx[0, 0, 1, 2]) == 6   # (13.3 − 1) / 2 = 6.15 → bin 6 (13 m)
    assert torch.equal(got[0, 0, :, 1, 2], torch.nn.functional.one_hot(torch.tensor(6), 21).float())
    keep = ~ok[:, :, None].expand_as(prob)
    assert torch.equal(got[keep], prob[keep])
    # the lift's depth loss names the same bin: its CE is zero on logits peaked there
    logits = torch.full((1, 2, 21, 3, 4), -30.0)
    logits[0, 0, 6, 1, 2] = 30.0
    assert float(lss_depth(logits, depth, list(bins))) < 1e-6


def test_depth_hint_puts_the_features_where_the_lidar_says():
    """A camera at the origin looking along +x: a hint of 10 m lands the lifted mass in the voxel
    10 m ahead, whatever depth the head predicts."""
    grid = Grid.from_record({"pc_range": [-20, -20, -2, 20, 20, 2], "voxel_size": [1.0, 1.0, 1.0],
                             "shape": [40, 40, 4]})
    lift = LiftSplat(4, 2, (1.0, 31.0, 31), 8, grid, splat_mass=True)
    torch.nn.init.zeros_(lift.head.weight)
    torch.nn.init.zeros_(lift.head.bias)
    with torch.no_grad():
        lift.head.bias[:31] = -10.0
        lift.head.bias[2] = 10.0          # the head says 3 m everywhere
    K = torch.tensor([[[[8.0, 0, 3.5], [0, 8.0, 3.5], [0, 0, 1]]]])  # 8×8 image: one 1×1 feature cell
    cam2ego = torch.tensor([[[[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]]]])  # z → +x
    feats = torch.zeros(1, 4, 1, 1)
    mass = lambda vol: vol[0, -1].expm1()  # noqa: E731 - the splat-mass channel, log1p undone
    with torch.no_grad():
        own, _ = lift(feats, K, cam2ego)
        hinted, _ = lift(feats, K, cam2ego, torch.full((1, 1, 1, 1), 10.0))
    assert int(mass(own).flatten().argmax()) == ((20 + 3) * 40 + 20) * 4 + 2
    assert int(mass(hinted).flatten().argmax()) == ((20 + 10) * 40 + 20) * 4 + 2
    assert float(mass(hinted).max()) == pytest.approx(1.0, abs=1e-6)


def test_unlabelled_config_renders_depth_only():
    cfg = tiny("dts.enabled=true")
    u = unlabelled_config(cfg)
    assert u.supervision == "2d" and u.loss.semantic == 0 and u.data.aux_frames == 0
    assert u.data.lidar_classes == "none" and u.data.mask_ray_share == 0 and u.seed != cfg.seed
    assert u.loss.depth == cfg.loss.depth and u.loss.lss_depth == cfg.loss.lss_depth
    off = unlabelled_config(tiny("dts.enabled=true", "dts.depth_rays=false"))
    assert off.loss.depth == 0 and off.loss.freespace == 0 and off.loss.termination == 0
    assert off.loss.lss_depth == cfg.loss.lss_depth


def test_contract_line_names_the_teacher():
    assert supervision_label(tiny()) == "2d"
    assert supervision_label(tiny("dts.enabled=true")) == "2d + DTS (depth-aware teacher) on camera sweeps"
    assert supervision_label(tiny("dts.enabled=true", "dts.teacher_depth=false")) == \
        "2d + Mean Teacher on camera sweeps"
    assert supervision_label(tiny("dts.enabled=true", "dts.pseudo_weight=0")) == "2d + camera sweeps (depth rays)"


def test_dts_refuses_what_it_cannot_do():
    cfg = tiny("dts.enabled=true")
    with pytest.raises(UserError, match="no camera sweeps"):
        check_dts(cfg, 0, has_parent=True, resumed=False)
    with pytest.raises(UserError, match="--init-from"):
        check_dts(cfg, 5, has_parent=False, resumed=False)
    check_dts(cfg, 5, has_parent=True, resumed=False)
    check_dts(tiny("dts.enabled=true", "dts.pseudo_weight=0"), 5, has_parent=False, resumed=False)
    check_dts(tiny(), 0, has_parent=False, resumed=False)
    with pytest.raises(UserError, match="density_margin"):
        tiny("dts.enabled=true", "dts.density_margin=0.5")
