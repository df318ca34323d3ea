"""OccupancyNet: shapes, gradients, lift-splat geometry in the key-ego frame, pretrained loading."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from renderocc.config import ModelConfig
from renderocc.errors import UserError
from renderocc.geometry import Grid
from renderocc.model import OccupancyNet
from renderocc.model.encoder import ResNet, load_pretrained

GRID = Grid([-8.0, -8.0, -1.0, 8.0, 8.0, 2.2], [0.8] * 3, [20, 20, 4])
TINY = ModelConfig(encoder="resnet10", width=8, norm="gn", channels=16, voxel_channels=8, blocks3d=1,
                   depth_bins=(1.0, 9.0, 9))


def tiny_net(**changes) -> OccupancyNet:
    return OccupancyNet(dataclasses.replace(TINY, **changes), GRID)
# camera looking along ego +x: camera z → ego x, camera x → −ego y, camera y → −ego z
CAM2EGO = torch.tensor([[0, 0, 1, 0.5], [-1, 0, 0, 0.0], [0, -1, 0, 0.0], [0, 0, 0, 1]], dtype=torch.float32)


def inputs(b=1, n=2, h=32, w=64):
    K = torch.tensor([[40.0, 0, w / 2 - 0.5], [0, 40.0, h / 2 - 0.5], [0, 0, 1]])
    return torch.randn(b, n, 3, h, w), K.expand(b, n, 3, 3).clone(), CAM2EGO.expand(b, n, 4, 4).clone()


def test_forward_shapes_and_gradients():
    torch.manual_seed(0)
    net = tiny_net()
    density, logits, depth_logits = net(*inputs(b=2))
    assert density.shape == (2, 20, 20, 4) and logits.shape == (2, 20, 20, 4, 17)
    assert (density >= 0).all()
    assert torch.allclose(density, torch.full_like(density, 0.1), atol=1e-5)  # thin-fog init
    (density.mean() + logits.mean()).backward()
    assert net.encoder.conv1.weight.grad.abs().sum() > 0  # images reach the grid
    assert depth_logits.shape == (2, 2, 9, 4, 8)  # returned, not kept on the module
    assert (32 // net.feature_stride, 64 // net.feature_stride) == depth_logits.shape[-2:]


def test_frustum_points_land_in_key_ego_frame():
    """The centre pixel at z = d lies at ego (0.5 + d, 0, 0): intrinsics and cam2ego are used."""
    net = tiny_net()
    _, K, T = inputs(h=16, w=16)
    pts = net.lift.frustum_points(K, T, 2, 2)  # stride 8: cells centred at pixels 3.5 and 11.5
    # pixel (7.5, 7.5) is the principal point; cell (0,0) centre is (3.5, 3.5): 4 px left/up
    d = net.lift.depths
    expect = torch.stack([0.5 + d, d * 4 / 40, d * 4 / 40], -1)
    assert torch.allclose(pts[0, 0, :, 0, 0], expect, atol=1e-5)


def test_splat_uses_voxel_centre_convention():
    """A feature lifted to x ∈ [0, 0.8) m lands in voxel index 10 (min −8 + 10·0.8 = 0)."""
    net = tiny_net(depth_bins=(0.7, 0.7, 1))  # one depth bin: every point at z = 0.7
    with torch.no_grad():
        net.lift.head.weight.zero_()
        net.lift.head.bias.fill_(1.0)
    feats = torch.zeros(1, 16, 1, 1)
    K = torch.tensor([[10.0, 0, 3.5], [0, 10.0, 3.5], [0, 0, 1]]).expand(1, 1, 3, 3)
    T = CAM2EGO.clone()
    T[0, 3] = -0.5
    vol, _ = net.lift(feats, K, T.expand(1, 1, 4, 4))
    nz = vol[0, 0].nonzero().tolist()
    assert nz == [[10, 10, 1]]  # x = 0.2 → 10, y = 0 → 10, z = 0 → (0 + 1) / 0.8 = 1.25 → 1


def test_pretrained_state_dict(tmp_path):
    src = ResNet("resnet10", 8, "frozen_bn")
    with torch.no_grad():
        for p in src.state_dict().values():
            p.copy_(torch.randn_like(p).abs() if p.dtype.is_floating_point else p)
    state = dict(src.state_dict())
    state["fc.weight"] = torch.zeros(10, 64)  # torchvision extras are ignored
    state["bn1.num_batches_tracked"] = torch.tensor(3)
    path = tmp_path / "r10.pth"
    torch.save({"state_dict": state}, path)
    dst = ResNet("resnet10", 8, "frozen_bn")
    missing = load_pretrained(dst, path)
    assert missing == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    with pytest.raises(UserError, match="pretrained weights file not found"):
        load_pretrained(dst, tmp_path / "nope.pth")
    torch.save({"x.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="no tensor matches"):
        load_pretrained(dst, tmp_path / "other.pth")


def test_density_init_is_configurable():
    net = tiny_net(density_init=0.5)
    init = float(torch.nn.functional.softplus(net.density_head.bias.detach()))
    assert math.isclose(init, 0.5, rel_tol=1e-5)


def test_splat_mass_channel_holds_the_depth_probability_mass():
    """One depth bin (probability 1) and one feature cell: log(1 + 1) in the one voxel it lands in."""
    net = tiny_net(splat_mass=True, depth_bins=(0.7, 0.7, 1))
    assert net.lift.out_channels == 9
    with torch.no_grad():
        net.lift.head.weight.zero_()
        net.lift.head.bias.fill_(1.0)
    K = torch.tensor([[10.0, 0, 3.5], [0, 10.0, 3.5], [0, 0, 1]]).expand(1, 1, 3, 3)
    T = CAM2EGO.clone()
    T[0, 3] = -0.5
    vol, _ = net.lift(torch.zeros(1, 16, 1, 1), K, T.expand(1, 1, 4, 4))
    mass = vol[0, -1].detach()
    assert mass.nonzero().tolist() == [[10, 10, 1]]
    assert math.isclose(float(mass[10, 10, 1]), math.log(2.0), rel_tol=1e-6)


class _Payload:
    """Unpickling this creates `marker`: the file exists iff the pickle ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pretrained_crafted_pickle_is_refused(tmp_path):
    """A weights file is user-given: its pickle never runs, and the refusal is one UserError."""
    import pickle

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": _Payload(str(marker))}))
    with pytest.raises(UserError, match="refused"):
        load_pretrained(ResNet("resnet10", 8, "frozen_bn"), path)
    assert not marker.exists()
    path.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="refused|not a readable pretrained weights file"):
        load_pretrained(ResNet("resnet10", 8, "frozen_bn"), path)
