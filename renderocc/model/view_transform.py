"""LSS-style 2D→3D view transform: lift each pixel into a depth distribution, splat into voxels.

Every frustum point is placed with the intrinsics of the *input* image (after augmentation) and
the camera→key-ego transform, so features land in the grid frame = LiDAR-keyframe ego frame,
the same frame the rays and the GT use (no frame mismatch). Voxel index follows the Occ3D
centre convention: voxel i covers [min + i·s, min + (i+1)·s).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from renderocc.geometry import Grid
from renderocc.model.encoder import group_norm


class Neck(nn.Module):
    """Fuse stride-8 and stride-16 features into one stride-8 map (a two-level FPN)."""

    def __init__(self, c3: int, c4: int, out: int):
        super().__init__()
        self.lat3 = nn.Conv2d(c3, out, 1)
        self.lat4 = nn.Conv2d(c4, out, 1)
        self.fuse = nn.Sequential(nn.Conv2d(out, out, 3, 1, 1, bias=False), group_norm(out),
                                  nn.ReLU(inplace=True))

    def forward(self, c3: torch.Tensor, c4: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.lat4(c4), size=c3.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(self.lat3(c3) + up)


def depth_bin_index(depth: torch.Tensor, bins) -> tuple[torch.Tensor, torch.Tensor]:
    """(bin index, valid) of metric depths on the LSS bins (min, max, count): the nearest bin centre.
    A depth ≤ 0 (no label) or outside the bins is not valid. The lift's depth loss and the teacher's
    depth injection both bin with this."""
    dmin, dmax, nb = float(bins[0]), float(bins[1]), int(bins[2])
    idx = torch.round((depth - dmin) / (dmax - dmin) * (nb - 1)).long()
    ok = (depth > 0) & (idx >= 0) & (idx < nb)
    return idx.clamp(0, nb - 1), ok


class LiftSplat(nn.Module):
    """Per-pixel depth distribution × context features, sum-pooled into the (X, Y, Z) grid."""

    def __init__(self, in_ch: int, ctx_ch: int, depth_bins: tuple[float, float, int], stride: int,
                 grid: Grid, splat_mass: bool = False):
        super().__init__()
        self.splat_mass = splat_mass
        self.out_channels = ctx_ch + int(splat_mass)
        dmin, dmax, n = depth_bins
        self.register_buffer("depths", torch.linspace(dmin, dmax, int(n)), persistent=False)
        self.stride = stride
        self.ctx_ch = ctx_ch
        self.register_buffer("pc_min", torch.tensor(grid.box[:3], dtype=torch.float32), persistent=False)
        self.register_buffer("vsize", torch.tensor(grid.voxel, dtype=torch.float32), persistent=False)
        self.shape = list(grid.shape)
        self.head = nn.Conv2d(in_ch, int(n) + ctx_ch, 1)

    def frustum_points(self, intrinsics: torch.Tensor, cam2ego: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, N, D, h, w, 3) key-ego positions of the frustum points of an h×w feature map."""
        dev = intrinsics.device
        s = self.stride
        # centre of feature cell (i, j) in input-pixel coordinates (pixel centres at integers)
        v = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) * s - 0.5
        u = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) * s - 0.5
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        pix = torch.stack([uu, vv, torch.ones_like(uu)], -1)  # (h, w, 3)
        kinv = torch.linalg.inv(intrinsics.float())  # (B, N, 3, 3)
        rays = torch.einsum("bnij,hwj->bnhwi", kinv, pix)  # camera frame, z = 1
        pts = rays[:, :, None] * self.depths[None, None, :, None, None, None]  # (B,N,D,h,w,3)
        rot, trans = cam2ego[..., :3, :3].float(), cam2ego[..., :3, 3].float()
        return torch.einsum("bnij,bndhwj->bndhwi", rot, pts) + trans[:, :, None, None, None, :]

    def forward(self, feats: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor,
                depth_hint: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B·N, C, h, w) → volume (B, ctx, X, Y, Z) and depth logits (B, N, D, h, w).

        `depth_hint` (B, N, h, w) metres, 0 = none: where a feature cell has a LiDAR depth, its depth
        distribution is that depth's bin with probability 1 (UniOcc's depth-aware teacher); the
        returned logits stay the network's own."""
        b, n = intrinsics.shape[:2]
        out = self.head(feats)
        nd = self.depths.numel()
        _, _, h, w = out.shape
        depth_logits = out[:, :nd].view(b, n, nd, h, w)
        ctx = out[:, nd:].view(b, n, self.ctx_ch, h, w)
        prob = depth_logits.softmax(2)
        if depth_hint is not None:
            prob = with_depth(prob, depth_hint, (self.depths[0], self.depths[-1], nd))
        # (B, N, D, h, w, C): the lifted features
        lifted = prob.unsqueeze(-1) * ctx.permute(0, 1, 3, 4, 2).unsqueeze(2)
        pts = self.frustum_points(intrinsics, cam2ego, h, w)
        idx = torch.floor((pts - self.pc_min) / self.vsize).long()
        X, Y, Z = self.shape
        inside = ((idx >= 0) & (idx < torch.tensor([X, Y, Z], device=idx.device))).all(-1)
        bidx = torch.arange(b, device=idx.device).view(b, 1, 1, 1, 1).expand_as(inside)
        flat = ((bidx * X + idx[..., 0]) * Y + idx[..., 1]) * Z + idx[..., 2]
        vol = lifted.new_zeros(b * X * Y * Z, self.ctx_ch)
        vol = vol.index_add(0, flat[inside], lifted[inside])
        if self.splat_mass:  # the depth probability landing in each voxel: a direct geometry cue
            mass = prob.new_zeros(b * X * Y * Z).index_add(0, flat[inside], prob[inside])
            vol = torch.cat([vol, torch.log1p(mass)[:, None]], 1)
        vol = vol.view(b, X, Y, Z, self.out_channels).permute(0, 4, 1, 2, 3).contiguous()
        return vol, depth_logits


def with_depth(prob: torch.Tensor, depth: torch.Tensor, bins) -> torch.Tensor:
    """The depth distributions `prob` (B, N, D, h, w) with every cell that has a depth in `depth`
    (B, N, h, w; 0 = none) replaced by a one-hot on its bin."""
    if depth.shape != prob.shape[:2] + prob.shape[3:]:
        raise ValueError(f"depth hint {tuple(depth.shape)} does not match the feature cells "
                         f"{tuple(prob.shape[:2] + prob.shape[3:])}")
    idx, ok = depth_bin_index(depth.to(prob.dtype), (float(bins[0]), float(bins[1]), int(bins[2])))
    onehot = torch.nn.functional.one_hot(idx, prob.shape[2]).permute(0, 1, 4, 2, 3).to(prob.dtype)
    return torch.where(ok[:, :, None], onehot, prob)
