"""Losses. Every loss is a per-sample mean, then a mean over samples: the batch mean then
decomposes over DDP ranks, so W processes with B/W samples give the gradients of 1 process
with B samples.

Rendered depth is the metric distance along the ray (renderer with background_depth: the
unstopped mass sits at the box exit), compared with the label's z converted to ray distance.
Rays without a depth label (dense-mask rays: `dist` NaN) are rendered for the semantic CE only,
through the detached density (they train classes, not geometry); every term that reads the depth
label or the ray weights' geometry sees `LossInputs.depth_rays`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from renderocc.classes import IGNORE
from renderocc.config import Config
from renderocc.geometry import Grid, Rays, Scoring
from renderocc.geometry.sampling import sample_positions, trilinear
from renderocc.model import OccupancyOutput
from renderocc.model.view_transform import depth_bin_index
from renderocc.ops import ray_optical_depth, render_rays
from renderocc.train.targets import occupied


def per_sample_mean(values: torch.Tensor, sample: torch.Tensor, n: int, weight: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Mean over samples of the (weighted) mean of `values` within each sample (empty → 0)."""
    w = torch.ones_like(values) if weight is None else weight
    num = values.new_zeros(n).index_add(0, sample, values * w)
    den = values.new_zeros(n).index_add(0, sample, w)
    return (num / den.clamp_min(1e-6)).mean()


def silog(pred: torch.Tensor, target: torch.Tensor, sample: torch.Tensor, n: int, lam: float = 0.85
          ) -> torch.Tensor:
    """Scale-invariant log loss per sample: sqrt(E[g²] − λ·E[g]²), g = log pred − log target."""
    g = torch.log(pred.clamp_min(1e-3)) - torch.log(target.clamp_min(1e-3))
    ones = torch.ones_like(g)
    cnt = g.new_zeros(n).index_add(0, sample, ones).clamp_min(1.0)
    m1 = g.new_zeros(n).index_add(0, sample, g) / cnt
    m2 = g.new_zeros(n).index_add(0, sample, g * g) / cnt
    return torch.sqrt((m2 - lam * m1 * m1).clamp_min(1e-8)).mean()


def semantic_ce(logits: torch.Tensor, label: torch.Tensor, sample: torch.Tensor, n: int,
                class_weights: torch.Tensor | None) -> torch.Tensor:
    """Class-weighted CE of rendered semantics; unlabelled rays (255) are ignored (weight 0: a mask,
    not a selection, so no step waits on the device to count them)."""
    ok = label != IGNORE
    safe = torch.where(ok, label, torch.zeros_like(label)).long()
    ce = F.cross_entropy(logits, safe, reduction="none")
    w = ok.to(ce.dtype) if class_weights is None else ok.to(ce.dtype) * class_weights[safe]
    return per_sample_mean(ce, sample, n, w)


def lss_depth(depth_logits: torch.Tensor, target: torch.Tensor, bins: list) -> torch.Tensor:
    """CE of the LSS per-pixel depth distribution against the nearest LiDAR z of each cell."""
    b, nb = depth_logits.shape[0], int(bins[2])
    idx, ok = depth_bin_index(target, bins)
    logits = depth_logits.permute(0, 1, 3, 4, 2).reshape(-1, nb)  # (B·N·h·w, D)
    ce = F.cross_entropy(logits, idx.reshape(-1), reduction="none")
    sample = torch.arange(b, device=ok.device).view(b, 1, 1, 1).expand_as(ok).reshape(-1)
    return per_sample_mean(ce, sample, b, ok.reshape(-1).to(ce.dtype))  # cells without LiDAR: weight 0


def occupancy_3d(density: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, voxel: float,
                 class_weights: torch.Tensor | None) -> torch.Tensor:
    """3D loss: occupancy BCE with P(occ) = 1 − exp(−σ·voxel), balanced occupied/free, + CE on
    the semantic logits of occupied voxels of known class. Target: 0..C-1 occupied, C (= the logits'
    classes) free, OCCUPIED_UNKNOWN occupied without a class (occupancy only), 255 ignored."""
    b = density.shape[0]
    sigma = (density * voxel).clamp_min(1e-6)
    n_cls = logits.shape[-1]
    known = target < n_cls
    occ = occupied(target, n_cls)
    free = target == n_cls
    sample = torch.arange(b, device=density.device).view(b, 1, 1, 1).expand_as(target)
    zero = density.sum() * 0
    loss_occ = per_sample_mean(-torch.log(-torch.expm1(-sigma[occ])), sample[occ], b) if occ.any() else zero
    loss_free = per_sample_mean(sigma[free], sample[free], b) if free.any() else zero
    loss_sem = zero
    if known.any():
        ce = F.cross_entropy(logits[known], target[known].long(), reduction="none")
        w = class_weights[target[known].long()] if class_weights is not None else None
        loss_sem = per_sample_mean(ce, sample[known], b, w)
    return loss_occ + loss_free + loss_sem


def class_weights_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """ENet-style 1/ln(1.2 + p): bounded (≤ 5.5), rarer classes higher; absent classes get the max."""
    p = counts.float() / counts.sum().clamp_min(1)
    w = 1.0 / torch.log(1.2 + p)
    w[counts == 0] = w.max()
    return w / w[counts > 0].mean() if (counts > 0).any() else torch.ones_like(w)


def line_of_sight(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor, ends: torch.Tensor,
                  batch_index: torch.Tensor, n: int, grid: Grid, step: float, margin: float, rel: float = 0.0,
                  near: float = 0.0, backend: str = "auto", window: bool = False, guard: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Line-of-sight losses from the depth label of each ray, on the renderer's own samples.

    With optical depth τ(t) = Σ_{t_k < t} σ(t_k)·step over the renderer's samples (box clip,
    voxel-centre trilinear σ; `ray_optical_depth`, computed in the kernel), T(t) = exp(−τ(t)):
    - empty before the hit: the label says the ray crossed [0, (1 − rel)·d − margin] unobstructed,
      so τ there should be 0 (`rel` keeps grazing rays — the ground seen at a shallow angle — from
      clearing the very voxel they end in); taken per unit length (τ over the samples' count), so
      near and far rays count alike — the 2D analogue of the 3D loss's free-space term;
    - termination: the ray must have stopped by d + margin: −log(1 − T(d + margin)); with `window`
      only the optical depth inside [(1 − rel)·d − margin, d + margin] counts — the ray must stop
      at its label, so fog in front (which the uniform pull of the plain form builds on long rays,
      where the per-unit-length free term is weak) cannot satisfy it.
    Both use only the 2D depth label (camera z converted to ray distance). `guard` (bool, like
    `density`): voxels the free term may not lower, because a label ray ends in them (the end point
    outweighs the rays that cross the voxel's free part: the grazing ground, a thin pole, a car the
    neighbouring frames' rays pass where it now stands). Returns (free, term).
    """
    t_ends = torch.stack([(1 - rel) * ends - margin, ends + margin], 1)
    tau, count = ray_optical_depth(density, origins, directions, batch_index, t_ends, grid=grid, step=step, near=near,
                                   backend=backend)
    free = tau[:, 0]
    if guard is not None:
        free = ray_optical_depth(torch.where(guard, density.detach(), density), origins, directions, batch_index,
                                 t_ends[:, :1].contiguous(), grid=grid, step=step, near=near, backend=backend)[0][:, 0]
    has = count[:, 0] > 0
    zero = density.sum() * 0
    tau_free = free / count[:, 0].clamp_min(1)
    loss_free = per_sample_mean(tau_free, batch_index, n, has.to(tau_free.dtype))
    stop = (tau[:, 1] - tau[:, 0]) if window else tau[:, 1]
    loss_term = per_sample_mean(-torch.log(-torch.expm1(-stop.clamp_min(1e-4))), batch_index, n) if len(ends) else zero
    return loss_free, loss_term


def free_beam_loss(density: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor, batch_index: torch.Tensor,
                   n: int, grid: Grid, step: float, near: float = 0.0, backend: str = "auto") -> torch.Tensor:
    """A LiDAR beam that returned nothing crossed the whole grid unobstructed: its optical depth
    up to the box exit, per unit length (τ over the samples' count, like `freespace`), should be 0.

    Label rays cannot say this (they exist only where something was hit), so without it the sky
    and the space above the street are constrained only by the camera rays that end beyond it.
    """
    t_ends = torch.full((len(batch_index), 1), FAR, dtype=origins.dtype, device=origins.device)
    tau, count = ray_optical_depth(density, origins, directions, batch_index, t_ends, grid=grid, step=step, near=near,
                                   backend=backend)
    has = count[:, 0] > 0
    if not has.any():
        return density.sum() * 0
    return per_sample_mean(tau[has, 0] / count[has, 0], batch_index[has], n)


FAR = 1e4  # metres: "to the box exit" for `ray_optical_depth`


# -- the terms -----------------------------------------------------------------------------------
RENDERED = frozenset({"2d", "lidar-sparse", "mixed"})  # contracts that render label rays
VOXEL_3D = frozenset({"lidar-sparse", "3d", "mixed"})  # contracts with a 3D voxel target
EVERY = frozenset({"2d", "lidar-sparse", "3d", "mixed"})


@dataclass
class LossInputs:
    """What the terms read: the model's output, the batch on the device, and what is derived once
    (the rendering of the label rays, the line-of-sight integrals) on first use."""

    out: OccupancyOutput
    batch: dict[str, torch.Tensor]
    cfg: Config
    class_weights: torch.Tensor | None
    scoring: Scoring | None = None  # how the model grid meets the 3D labels' grid (None: the same grid)
    _cache: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.out.density.shape[0]

    @property
    def rays(self) -> Rays:
        """The valid label rays, flattened over the batch, with their sample index and class."""
        if "rays" not in self._cache:
            b, valid = self.batch, self.batch["valid"]
            bi = torch.arange(self.n, device=valid.device)[:, None].expand_as(valid)[valid]
            self._cache["rays"] = Rays(b["origins"][valid], b["directions"][valid], b["ends"][valid], bi,
                                       b["label"][valid])
        return self._cache["rays"]

    @property
    def has_depth(self) -> torch.Tensor:
        """bool (rays,): label rays with a depth label (not dense-mask rays, whose `ends` is NaN)."""
        return torch.isfinite(self.rays.ends)

    @property
    def depth_rays(self) -> Rays | None:
        """The rays restricted to those with depth; None when every ray has one (no copy)."""
        if "depth_rays" not in self._cache:
            m = self.has_depth
            self._cache["depth_rays"] = None if bool(m.all()) else self.rays.select(m)
        return self._cache["depth_rays"]

    def with_depth(self, values: torch.Tensor) -> torch.Tensor:
        """A per-ray tensor (of `rays` / `render`) restricted to the rays with depth."""
        return values if self.depth_rays is None else values[self.has_depth]

    @property
    def render(self):
        """`render_rays` of the label rays (distortion only when its term is on). Rays without depth
        (dense-mask rays) see the density detached: a class without a distance must not shape the
        geometry (it would pull density anywhere along the ray), so they train the logits only. With
        `loss.mask_semantics = surface` they are not rendered at all (their rows stay zero):
        `surface_semantics` reads their class where they stop instead."""
        if "render" not in self._cache:
            if self.depth_rays is None:
                self._cache["render"] = self._render(self.rays, self.out.density)
            else:
                m = self.has_depth
                masks = None
                if self.cfg.loss.mask_semantics == "rendered":
                    masks = self._render(self.rays.select(~m), self.out.density.detach())
                self._cache["render"] = _merge(m, self._render(self.depth_rays, self.out.density), masks)
        return self._cache["render"]

    def _render(self, r: Rays, density: torch.Tensor):
        return render_rays(density, self.out.semantics, r.origins, r.directions, r.batch_index,
                           grid=self.cfg.grid.spec, step=self.cfg.render.step,
                           near=self.cfg.render.near, backend=self.cfg.render.backend, background_depth=True,
                           return_distortion=self.cfg.loss.distortion > 0)

    @property
    def los(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(free, termination) line-of-sight losses: one kernel call serves both terms."""
        if "los" not in self._cache:
            r, g, lc = self.depth_rays or self.rays, self.cfg.grid.spec, self.cfg.loss
            self._cache["los"] = line_of_sight(
                self.out.density, r.origins, r.directions, r.ends, r.batch_index, self.n, g,
                self.cfg.render.step, lc.los_margin * g.edge, lc.los_margin_rel,
                self.cfg.render.near, self.cfg.render.backend, lc.termination_window, self.end_voxels)
        return self._cache["los"]

    @property
    def end_voxels(self) -> torch.Tensor | None:
        """bool (B, X, Y, Z): voxels a label ray of the sample ends in (the `label_voxels` target's
        occupied voxels, of known class or not), which the free-space term may not lower; None without
        that target."""
        target = self.batch.get("label_voxels")
        return None if target is None else occupied(target.to(self.out.density.device), self.out.semantics.shape[-1])

    @property
    def free_beams(self) -> torch.Tensor:
        """`free_beam_loss` of the batch's valid free beams (LiDAR beams without a return)."""
        valid = self.batch["free_valid"]
        bi = torch.arange(self.n, device=valid.device)[:, None].expand_as(valid)[valid]
        g = self.cfg.grid.spec
        return free_beam_loss(self.out.density, self.batch["free_origins"][valid], self.batch["free_directions"][valid],
                              bi, self.n, g, self.cfg.render.step, self.cfg.render.near, self.cfg.render.backend)

    @property
    def voxel(self) -> float:
        return self.cfg.grid.spec.edge


def _merge(where: torch.Tensor, a, b):
    """One RenderOutput over all rays from `a` (rays where `where`) and `b` (the others, zeros when
    `b` is None), in order."""
    def put(x: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        out = x.new_zeros((len(where), *x.shape[1:])).index_put((where,), x)
        return out if y is None else out.index_put((~where,), y)

    return dataclasses.replace(a, **{f.name: put(getattr(a, f.name), None if b is None else getattr(b, f.name))
                                     for f in dataclasses.fields(a)})


def _depth(x: LossInputs) -> torch.Tensor:
    return silog(x.with_depth(x.render.depth), x.with_depth(x.rays.ends), x.with_depth(x.rays.batch_index), x.n)


def _depth_absrel(x: LossInputs) -> torch.Tensor:  # SILog forgives a global scale; this does not
    d = x.with_depth(x.rays.ends)
    return per_sample_mean((x.with_depth(x.render.depth) - d).abs() / d.clamp_min(1e-3),
                           x.with_depth(x.rays.batch_index), x.n)


def _semantic(x: LossInputs) -> torch.Tensor:
    if x.cfg.loss.mask_semantics == "surface" and x.depth_rays is not None:
        logits, label = surface_semantics(x)
        return semantic_ce(logits, label, x.rays.batch_index, x.n, x.class_weights)
    return semantic_ce(x.render.semantics, x.rays.label, x.rays.batch_index, x.n, x.class_weights)


def surface_semantics(x: LossInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, label) per ray: rays with depth keep their rendered logits; a dense-mask ray takes
    the logits interpolated where it stops — its median depth, the first sample with T ≤ ½, on the
    renderer's samples with the density detached (the LiDAR rays place the surface, the mask only
    names it; the mean depth would sit in any fog in front) — and is ignored when T never falls
    to ½ (a ray that stops nowhere names no voxel)."""
    r, g, step = x.rays, x.cfg.grid.spec, x.cfg.render.step
    mask = ~x.has_depth
    logits, label = x.render.semantics.clone(), r.label.clone()  # mask rows: not rendered (zeros)
    o, d, sample = r.origins[mask], r.directions[mask], r.batch_index[mask]
    at = logits.new_zeros((len(o), logits.shape[-1]))
    stops = torch.zeros(len(o), dtype=torch.bool, device=o.device)
    for b in torch.unique(sample):
        sel = torch.nonzero(sample == b).squeeze(1)
        _, valid, points, _, _ = sample_positions(o[sel], d[sel], g.box, x.cfg.render.near, step)
        with torch.no_grad():
            sigma = trilinear(x.out.density[b][None], points, g)[..., 0] * valid
            half = torch.cumsum(sigma * step, 1) >= math.log(2.0)
        stops[sel] = half.any(1)
        k = half.float().argmax(1)
        where = points[torch.arange(len(sel), device=o.device), k]
        at[sel] = trilinear(x.out.semantics[b].permute(3, 0, 1, 2), where, g).to(at.dtype)
    logits[mask] = at
    label[mask] = torch.where(stops, label[mask], torch.full_like(label[mask], IGNORE))
    return logits, label


def _distortion(x: LossInputs) -> torch.Tensor:  # a geometry prior: mask rays are for semantics only
    return per_sample_mean(x.with_depth(x.render.distortion), x.with_depth(x.rays.batch_index), x.n)


def _sparsity(x: LossInputs) -> torch.Tensor:  # a label-free prior: space is empty unless a ray needs it
    return (x.out.density * x.voxel).mean()


def _label_voxels(x: LossInputs) -> torch.Tensor:
    """The 3D loss on the label rays' own voxels (`targets.label_voxel_target`, on the model grid).

    Why beside the rendered terms: Occ3D calls a voxel occupied when it holds a surface, but a
    rendered voxel is opaque throughout, so a ray grazing the ground crosses the upper half of the
    ground's voxels before its end point, and a thin object fills a fraction of its voxel. The
    rendered depth and line-of-sight terms then prefer a blurred, thinned field to the one that
    holds every end point (measured: `benchmarks/results/fit_voxelize_baseline.md`). Read voxel by
    voxel, the same labels say which voxels hold a surface."""
    return occupancy_3d(x.out.density, x.out.semantics, x.batch["label_voxels"], x.voxel, x.class_weights)


def _occ3d(x: LossInputs) -> torch.Tensor:
    density, logits, voxel = x.out.density, x.out.semantics, x.voxel
    if x.scoring is not None and x.scoring.mode == "interpolate":  # a finer model grid: scored at the labels
        pairs = [x.scoring.fields_to_labels(d, s) for d, s in zip(density, logits, strict=True)]
        density, logits = torch.stack([d for d, _ in pairs]), torch.stack([s for _, s in pairs])
        voxel = x.scoring.labels.edge
    return occupancy_3d(density, logits, x.batch["occ_target"], voxel, x.class_weights)


def _lss_depth(x: LossInputs) -> torch.Tensor:
    return lss_depth(x.out.depth_logits.float(), x.batch["depth_target"], x.cfg.model.depth_bins)


@dataclass(frozen=True)
class LossTerm:
    """One weighted loss: `name` is its `[loss]` weight key and its log column; it applies under
    `contracts` and reads the batch keys in `needs` (the dataset yields them when it is active);
    `enabled` can switch it off from other config keys (e.g. no free beams drawn)."""

    name: str
    contracts: frozenset[str]
    needs: tuple[str, ...]
    compute: Callable[[LossInputs], torch.Tensor]
    enabled: Callable[[Config], bool] = lambda cfg: True


RAY_KEYS = ("origins", "directions", "ends", "label", "valid")
FREE_BEAM_KEYS = ("free_origins", "free_directions", "free_valid")
TERMS: tuple[LossTerm, ...] = (
    LossTerm("depth", RENDERED, RAY_KEYS, _depth),
    LossTerm("depth_absrel", RENDERED, RAY_KEYS, _depth_absrel),
    LossTerm("semantic", RENDERED, RAY_KEYS, _semantic),
    LossTerm("distortion", RENDERED, RAY_KEYS, _distortion),
    LossTerm("freespace", RENDERED, RAY_KEYS, lambda x: x.los[0]),
    LossTerm("termination", RENDERED, RAY_KEYS, lambda x: x.los[1]),
    LossTerm("free_beams", RENDERED, FREE_BEAM_KEYS, lambda x: x.free_beams, lambda cfg: cfg.data.free_beams > 0),
    LossTerm("sparsity", RENDERED, (), _sparsity),
    LossTerm("label_voxels", RENDERED, ("label_voxels",), _label_voxels),
    LossTerm("occ3d", VOXEL_3D, ("occ_target",), _occ3d),
    LossTerm("lss_depth", EVERY, ("depth_target",), _lss_depth),
)


def active_terms(cfg: Config) -> list[LossTerm]:
    """The terms with a positive weight under the run's supervision contract."""
    return [t for t in TERMS if getattr(cfg.loss, t.name) > 0 and cfg.supervision in t.contracts
            and t.enabled(cfg)]


def needed_batch_keys(cfg: Config) -> set[str]:
    """Batch keys the active terms read (the dataset builds only these targets)."""
    return {k for t in active_terms(cfg) for k in t.needs}


def total_loss(out: OccupancyOutput, batch: dict[str, torch.Tensor], cfg: Config,
               class_weights: torch.Tensor | None, scoring: Scoring | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """(Σ weight·term, {term: weighted value, detached}, rays rendered) over the active terms; `scoring` says
    how the model grid meets the grid of the 3D targets (`Grid.coarsens`)."""
    x = LossInputs(out, batch, cfg, class_weights, scoring)
    parts = {t.name: getattr(cfg.loss, t.name) * t.compute(x) for t in active_terms(cfg)}
    n_rays = int(x.rays.batch_index.numel()) if "rays" in x._cache else 0
    loss = sum(parts.values()) if parts else out.density.sum() * 0
    return loss, {k: v.detach() for k, v in parts.items()}, n_rays
