"""Loss terms: the kernel-backed line-of-sight loss equals the materialised one it replaced, and the
term table decides what is computed."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from renderocc.classes import OCCUPIED_UNKNOWN
from renderocc.config import load_config, resolved
from renderocc.geometry import Grid
from renderocc.model import OccupancyOutput
from renderocc.train import losses as L


def materialised_line_of_sight(density, origins, dirs, dist, sample, n, grid, step, margin, rel):
    """The loss as it was computed before the kernel did it: every sample of every ray in PyTorch
    (midpoints from t = 0, grid_sample at the voxel-centre convention, zero outside the box)."""
    lo = torch.tensor(grid.box[:3], dtype=density.dtype)
    hi = torch.tensor(grid.box[3:], dtype=density.dtype)
    end = dist + margin
    k = int(math.ceil(float(end.max()) / step))
    t = (torch.arange(k, dtype=density.dtype) + 0.5) * step
    pts = origins[:, None] + t[None, :, None] * dirs[:, None]
    inside = ((pts > lo) & (pts < hi)).all(-1)
    norm = (pts - lo) / (hi - lo) * 2 - 1
    sig = density.new_zeros(pts.shape[:2])
    for bi in range(density.shape[0]):
        m = sample == bi
        g = norm[m].flip(-1)[None, :, :, None, :]
        v = F.grid_sample(density[bi][None, None], g, mode="bilinear", padding_mode="border", align_corners=False)
        sig = sig.index_put((m.nonzero()[:, 0],), v[0, 0, :, :, 0])
    sig = sig * inside
    free = t[None] < ((1 - rel) * dist - margin)[:, None]
    tau_free = (sig * step * free).sum(1) / free.sum(1).clamp_min(1)
    has = free.any(1)
    loss_free = L.per_sample_mean(tau_free[has], sample[has], n)
    tau_end = (sig * step * (t[None] < end[:, None])).sum(1)
    loss_term = L.per_sample_mean(-torch.log(-torch.expm1(-tau_end.clamp_min(1e-4))), sample, n)
    return loss_free, loss_term


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_line_of_sight_equals_the_materialised_loss(seed):
    """Random grids, rays from inside the box that end inside it (as the dataset keeps them):
    the renderer's samples start at the origin there, so both compute the same sum."""
    g = torch.Generator().manual_seed(seed)
    grid = Grid([-8.0, -8.0, -1.0, 8.0, 8.0, 2.2], [0.8] * 3, [20, 20, 4])
    density = (torch.rand(2, 20, 20, 4, generator=g, dtype=torch.float64) * 2).requires_grad_()
    R = 300
    origins = (torch.rand(R, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([8.0, 8.0, 1.0])
    origins[:, 2] += 0.6
    dirs = F.normalize(torch.randn(R, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 0.2]), dim=1)
    lo, hi = torch.tensor(grid.box[:3]), torch.tensor(grid.box[3:])
    t_exit = torch.maximum((lo - origins) / dirs, (hi - origins) / dirs).min(1).values  # origins are inside
    margin, step = 0.8, 0.3
    # labels end inside the box and d + margin stays before the last full step: past it the renderer
    # takes no sample (the old loss took one more half-step sample there: a documented difference)
    keep = t_exit > 2 * (margin + step)
    origins, dirs, t_exit = origins[keep], dirs[keep], t_exit[keep]
    R = len(t_exit)
    dist = (t_exit - margin - step) * (0.2 + 0.8 * torch.rand(R, generator=g, dtype=torch.float64))
    sample = (torch.arange(R) % 2).long()
    new = L.line_of_sight(density, origins, dirs, dist, sample, 2, grid, step, margin, rel=0.4)
    old = materialised_line_of_sight(density, origins, dirs, dist, sample, 2, grid, step, margin, rel=0.4)
    for a, b in zip(new, old, strict=True):
        assert abs(float(a.detach()) - float(b.detach())) < 1e-5, (float(a.detach()), float(b.detach()))
    assert R > 200
    g_new = torch.autograd.grad(new[0] + 0.5 * new[1], density)[0]
    g_old = torch.autograd.grad(old[0] + 0.5 * old[1], density)[0]
    torch.testing.assert_close(g_new, g_old, atol=1e-5, rtol=1e-5)


def test_active_terms_follow_weights_and_contracts():
    names = lambda cfg: [t.name for t in L.active_terms(cfg)]  # noqa: E731
    demo = load_config("demo")
    assert names(demo) == ["depth", "semantic", "distortion", "freespace", "termination", "free_beams", "sparsity",
                           "label_voxels", "lss_depth"]
    assert names(load_config("demo", ["supervision='3d'"])) == ["occ3d", "lss_depth"]
    assert "occ3d" in names(load_config("demo", ["supervision='mixed'"]))
    assert names(load_config("demo", ["loss.lss_depth=0", "loss.distortion=0", "loss.termination=0",
                                      "loss.label_voxels=0"])) == ["depth", "semantic", "freespace", "free_beams",
                                                                   "sparsity"]
    assert L.needed_batch_keys(load_config("demo", ["supervision='3d'"])) == {"occ_target", "depth_target"}
    # every term is a [loss] weight key and a log column
    from renderocc.train.logger import LOG_FIELDS

    for t in L.TERMS:
        assert hasattr(demo.loss, t.name) and t.name in LOG_FIELDS


def test_termination_window_is_not_satisfied_by_fog_in_front():
    """A ray labelled at 10 m through 6 m of fog and an empty window: the plain termination is
    nearly met by the fog, the windowed one is not, and its gradient lies in the window only."""
    grid = Grid([0.0, -3.2, -1.6, 16.0, 3.2, 1.6], [0.8, 0.8, 0.8], [20, 8, 4])
    density = torch.full((1, 20, 8, 4), 0.01, dtype=torch.float64)  # a faint haze: σ > 0 as softplus gives
    density[0, 1:9] = 0.5  # fog over x ≈ 0.8–7.2 m
    density.requires_grad_()
    o, d = torch.tensor([[0.1, 0.0, 0.0]], dtype=torch.float64), torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    dist, sample = torch.tensor([10.0], dtype=torch.float64), torch.tensor([0])
    _, plain = L.line_of_sight(density, o, d, dist, sample, 1, grid, 0.2, 0.8, rel=0.1)
    _, window = L.line_of_sight(density, o, d, dist, sample, 1, grid, 0.2, 0.8, rel=0.1, window=True)
    assert float(plain.detach()) < 0.1 < 2.0 < float(window.detach())
    grad = torch.autograd.grad(window, density)[0][0, :, 4, 2]
    assert grad[:9].abs().max() < 1e-9  # the free stretch up to (1 − 0.1)·10 − 0.8 = 8.2 m: no pull
    assert grad[10:14].min() < 0  # the window around 10 m: density pulled up


def test_guarded_voxels_are_not_lowered_by_the_free_term():
    """A ray crossing a voxel another ray ends in: unguarded, the free term pushes that voxel down;
    guarded, its gradient there is zero, while the voxels it only crosses are still pushed, and the
    termination term is the same (it reads the unguarded density)."""
    grid = Grid([0.0, -1.6, -1.6, 8.0, 1.6, 1.6], [0.8, 0.8, 0.8], [10, 4, 4])
    density = torch.full((1, 10, 4, 4), 0.3, dtype=torch.float64, requires_grad=True)
    o, d = torch.tensor([[0.1, 0.0, 0.0]], dtype=torch.float64), torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    dist, sample = torch.tensor([7.0], dtype=torch.float64), torch.tensor([0])
    guard = torch.zeros(1, 10, 4, 4, dtype=torch.bool)
    guard[0, 4, :, :] = True  # x 3.2–4.0 m: on the free stretch of this ray
    free, term = L.line_of_sight(density, o, d, dist, sample, 1, grid, 0.2, 0.8)
    free_g, term_g = L.line_of_sight(density, o, d, dist, sample, 1, grid, 0.2, 0.8, guard=guard)
    assert torch.allclose(term, term_g)
    grad = torch.autograd.grad(free, density)[0][0, :, 2, 2]
    grad_g = torch.autograd.grad(free_g, density)[0][0, :, 2, 2]
    assert grad[4] > 0 and grad_g[4] == 0
    assert grad_g[2] > 0 and grad_g[6] > 0


def test_label_voxels_term_reads_the_batch_target_and_guards_end_voxels():
    """`loss.label_voxels` is the 3D loss on the batch's `label_voxels` target; with it the free-space
    term leaves the target's occupied voxels alone."""
    cfg = load_config("demo", ["loss.label_voxels=1", "loss.lss_depth=0"])
    assert "label_voxels" in L.needed_batch_keys(cfg)
    assert "label_voxels" not in L.needed_batch_keys(load_config("demo", ["loss.label_voxels=0"]))
    assert "label_voxels" not in L.needed_batch_keys(load_config("demo", ["loss.label_voxels=1", "supervision='3d'"]))
    g = Grid([-2.0, -2.0, -1.0, 2.0, 2.0, 1.4], [0.4, 0.4, 0.4], [10, 10, 6])
    cfg = resolved(cfg.replace(grid={"pc_range": list(g.box), "voxel_size": list(g.voxel), "shape": None}), g)
    density = torch.full((1, *g.shape), 0.5)
    logits = torch.zeros(1, *g.shape, 17)
    target = torch.full((1, *g.shape), 255, dtype=torch.uint8)
    target[0, 3, 4, 5], target[0, 0, 0, 0] = 4, 17
    out = OccupancyOutput(density, logits, density.new_zeros(1, 0, 0, 0, 0))
    x = L.LossInputs(out, {"label_voxels": target}, cfg, None)
    ref = L.occupancy_3d(density, logits, target, g.edge, None)
    assert torch.allclose(L._label_voxels(x), ref)
    assert x.end_voxels.sum() == 1 and bool(x.end_voxels[0, 3, 4, 5])


def test_a_voxel_occupied_of_unknown_class_trains_occupancy_not_class():
    """Depth-only labels (no lidarseg) still say a voxel holds a surface: OCCUPIED_UNKNOWN raises its
    density, leaves its logits alone, and is guarded from the free-space term like any end voxel."""
    g = Grid([-2.0, -2.0, -1.0, 2.0, 2.0, 1.4], [0.4, 0.4, 0.4], [10, 10, 6])
    density = torch.full((1, *g.shape), 0.5, requires_grad=True)
    logits = torch.zeros(1, *g.shape, 17, requires_grad=True)
    target = torch.full((1, *g.shape), 255, dtype=torch.uint8)
    target[0, 3, 4, 5], target[0, 0, 0, 0] = OCCUPIED_UNKNOWN, 17
    L.occupancy_3d(density, logits, target, g.edge, None).backward()
    assert density.grad[0, 3, 4, 5] < 0 and density.grad[0, 0, 0, 0] > 0
    assert logits.grad is None or not logits.grad.any()
    cfg = load_config("demo", ["loss.label_voxels=1"])
    out = OccupancyOutput(density.detach(), logits.detach(), density.new_zeros(1, 0, 0, 0, 0))
    x = L.LossInputs(out, {"label_voxels": target}, cfg, None)
    assert x.end_voxels.sum() == 1 and bool(x.end_voxels[0, 3, 4, 5])
