"""LSS-style 2D→3D view transform: lift each pixel into a depth distribution, then either splat the
frustum points into voxels (`splat`, forward projection) or let each voxel read the frustum volume
where it projects (`sample`, backward projection as in FB-BEV): at range the frustum points
thin out (one 8-px cell spans ~1.3 m at 22 m, wider than a 0.8 m voxel), so a splat leaves most far
voxels without features, while every voxel a camera sees gets one when sampled.

Every frustum point is placed with the intrinsics of the *input* image (after augmentation) and
the camera→key-ego transform, so features land in the grid frame = LiDAR-keyframe ego frame,
the same frame the rays and the GT use (no frame mismatch). Voxel index follows the Occ3D
centre convention: voxel i covers [min + i·s, min + (i+1)·s).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Neck(nn.Module):
    """Fuse stride-8 and stride-16 features into one stride-8 map (a two-level FPN)."""

    def __init__(self, c3: int, c4: int, out: int):
        super().__init__()
        self.lat3 = nn.Conv2d(c3, out, 1)
        self.lat4 = nn.Conv2d(c4, out, 1)
        self.fuse = nn.Sequential(nn.Conv2d(out, out, 3, 1, 1, bias=False), nn.GroupNorm(min(8, out), out),
                                  nn.ReLU(inplace=True))

    def forward(self, c3: torch.Tensor, c4: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.lat4(c4), size=c3.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(self.lat3(c3) + up)


class LiftSplat(nn.Module):
    """Per-pixel depth distribution × context features, into the (X, Y, Z) grid: sum-pooled frustum
    points (`mode="splat"`) or the frustum volume read trilinearly at each voxel centre's camera
    (u, v, depth), summed over cameras (`mode="sample"`)."""

    def __init__(self, in_ch: int, ctx_ch: int, depth_bins: tuple[float, float, int], stride: int,
                 pc_range: list[float], voxel_size: list[float], shape: list[int], splat_mass: bool = False,
                 mode: str = "splat"):
        super().__init__()
        if mode not in ("splat", "sample"):
            raise ValueError(f"lift mode must be splat or sample, got {mode!r}")
        self.mode = mode
        self.splat_mass = splat_mass
        self.out_channels = ctx_ch + int(splat_mass)
        dmin, dmax, n = depth_bins
        self.register_buffer("depths", torch.linspace(dmin, dmax, int(n)), persistent=False)
        self.stride = stride
        self.ctx_ch = ctx_ch
        self.register_buffer("pc_min", torch.tensor(pc_range[:3], dtype=torch.float32), persistent=False)
        self.register_buffer("vsize", torch.tensor(voxel_size, dtype=torch.float32), persistent=False)
        self.shape = [int(s) for s in shape]
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

    def forward(self, feats: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B·N, C, h, w) → volume (B, ctx, X, Y, Z) and depth logits (B, N, D, h, w)."""
        b, n = intrinsics.shape[:2]
        out = self.head(feats)
        nd = self.depths.numel()
        _, _, h, w = out.shape
        depth_logits = out[:, :nd].view(b, n, nd, h, w)
        ctx = out[:, nd:].view(b, n, self.ctx_ch, h, w)
        prob = depth_logits.softmax(2)
        if self.mode == "sample":
            return self.sample(prob, ctx, intrinsics, cam2ego), depth_logits
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

    def voxel_centres(self, device: torch.device) -> torch.Tensor:
        """(X·Y·Z, 3) grid-frame voxel centres, x slowest (the volume's memory order)."""
        axes = [self.pc_min[i] + (torch.arange(k, device=device, dtype=torch.float32) + 0.5) * self.vsize[i]
                for i, k in enumerate(self.shape)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)

    def sample(self, prob: torch.Tensor, ctx: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor
               ) -> torch.Tensor:
        """Backward projection: (B, ctx [+1], X, Y, Z) = Σ over cameras of prob ⊗ ctx (and prob alone
        with `splat_mass`) read at each voxel centre's (depth, v, u) in the camera's frustum volume;
        zero where no camera sees the voxel."""
        b, n, nd, h, w = prob.shape
        X, Y, Z = self.shape
        vol = prob.unsqueeze(2) * ctx.unsqueeze(3)  # (B, N, C, D, h, w)
        if self.splat_mass:
            vol = torch.cat([vol, prob.unsqueeze(2)], 2)
        c = vol.shape[2]
        centres = self.voxel_centres(prob.device)  # (P, 3)
        rot, trans = cam2ego[..., :3, :3].float(), cam2ego[..., :3, 3].float()
        cam = torch.einsum("bnji,bnpj->bnpi", rot, centres[None, None] - trans[:, :, None, :])  # R^T (p − t)
        z = cam[..., 2]
        uvw = torch.einsum("bnij,bnpj->bnpi", intrinsics.float(), cam)
        zc = z.clamp_min(1e-3)
        u, v = uvw[..., 0] / zc, uvw[..., 1] / zc
        s = self.stride
        # feature cell j is centred at input pixel (j + ½)·s − ½; bins at the linspace values
        gx = ((u + 0.5) / s - 0.5) / max(w - 1, 1) * 2 - 1
        gy = ((v + 0.5) / s - 0.5) / max(h - 1, 1) * 2 - 1
        dmin, dmax = float(self.depths[0]), float(self.depths[-1])
        gz = (z - dmin) / max(dmax - dmin, 1e-6) * 2 - 1
        gz = torch.where(z > 0, gz, torch.full_like(gz, -2.0))  # behind the camera: outside, reads zero
        grid = torch.stack([gx, gy, gz], -1).view(b * n, 1, 1, -1, 3)
        out = F.grid_sample(vol.reshape(b * n, c, nd, h, w), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)  # (B·N, c, 1, 1, P)
        out = out.view(b, n, c, X, Y, Z).sum(1)
        if self.splat_mass:
            out = torch.cat([out[:, :-1], torch.log1p(out[:, -1:])], 1)
        return out
