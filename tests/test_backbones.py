"""Image backbones (plain ResNet, timm adapters) and strict loading of local pretrained weights.

timm tests skip where timm (with torchvision) does not import; nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import re
import sys

import pytest
import torch
from torch import nn

from renderocc.config import Config, ModelConfig, load_config
from renderocc.errors import UserError
from renderocc.geometry import Grid
from renderocc.model import OccupancyNet
from renderocc.model.backbones import make_encoder
from renderocc.model.build import FROZEN_BN_REFUSAL, build_model
from renderocc.model.encoder import FrozenBatchNorm2d, ResNet
from renderocc.model.weights import load_weights

GRID = Grid([-8.0, -8.0, -1.0, 8.0, 8.0, 2.2], [0.8] * 3, [20, 20, 4])
TINY = ModelConfig(encoder="resnet10", width=8, norm="gn", channels=16, voxel_channels=8, blocks3d=1,
                   depth_bins=(1.0, 9.0, 9))
CAM2EGO = torch.tensor([[0, 0, 1, 0.5], [-1, 0, 0, 0.0], [0, -1, 0, 0.0], [0, 0, 0, 1]], dtype=torch.float32)
SWIN_B = "swin_base_patch4_window7_224"


def run_config(**model) -> Config:
    """A resolved config (grid filled in) with a tiny model."""
    grid = {"pc_range": list(GRID.box), "voxel_size": list(GRID.voxel), "shape": list(GRID.shape)}
    return Config.from_dict({"grid": grid, "model": {**dataclasses.asdict(TINY), **model}})


def inputs(b=1, n=2, h=32, w=64):
    K = torch.tensor([[40.0, 0, w / 2 - 0.5], [0, 40.0, h / 2 - 0.5], [0, 0, 1]])
    return torch.randn(b, n, 3, h, w), K.expand(b, n, 3, 3).clone(), CAM2EGO.expand(b, n, 4, 4).clone()


def randomized(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state_dict with every float tensor random (positive: valid BN variances)."""
    with torch.no_grad():
        for v in module.state_dict().values():
            if v.dtype.is_floating_point:
                v.copy_(torch.rand_like(v) + 0.5)
    return {k: v.clone() for k, v in module.state_dict().items()}


def timm_or_skip():
    timm = pytest.importorskip("timm")
    pytest.importorskip("torchvision")
    return timm


def timm_state(timm, name: str) -> dict[str, torch.Tensor]:
    """A random `timm.create_model(name)` classifier state_dict: the layout of a timm checkpoint."""
    kw = {"dynamic_img_size": True} if name.startswith("swin") else {}
    torch.manual_seed(0)
    return randomized(timm.create_model(name, pretrained=False, **kw))


# -- frozen BatchNorm ------------------------------------------------------------------------------
def test_frozen_bn_keeps_the_autocast_dtype():
    """bf16 activations stay bf16 (no promotion by the fp32 buffers) and match the fp32 result."""
    torch.manual_seed(0)
    bn = FrozenBatchNorm2d(8)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 16, 16)
    ref = bn(conv(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bn(conv(x))
        c3, c4 = ResNet("resnet10", 8, "frozen_bn")(x)
    assert y.dtype == torch.bfloat16 and c3.dtype == c4.dtype == torch.bfloat16
    assert torch.allclose(y.float(), ref, atol=0.1, rtol=0.05)
    assert bn(x[:, :1].expand(2, 8, 16, 16).half()).dtype == torch.float16


# -- strict loading: plain ResNet (no timm needed) -------------------------------------------------
def test_plain_resnet_strict_round_trip_with_wrapper_and_prefix(tmp_path):
    src = ResNet("resnet18", 8, "frozen_bn")
    state = randomized(src)
    extra = {"fc.weight": torch.zeros(10, 32), "layer4.0.conv1.weight": torch.zeros(64, 32, 3, 3),
             "bn1.num_batches_tracked": torch.tensor(7)}
    path = tmp_path / "bevdet.pth"
    torch.save({"meta": {"epoch": 24}, "state_dict": {**{f"img_backbone.{k}": v for k, v in {**state, **extra}.items()},
                                                      "img_neck.lateral.weight": torch.zeros(3)}}, path)
    dst = ResNet("resnet18", 8, "frozen_bn")
    lines = []
    report = load_weights(dst, path, prefix="img_backbone.", say=lines.append)
    assert report.ok and report.wrapper == "state_dict" and len(report.loaded) == len(state)
    assert sorted(report.ignored) == sorted(extra)  # classifier, layer4, BN counter: tolerated by design
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in state.items())
    assert len(lines) == 1 and "ignored by design (fc.*, layer4.0.* + 1 BatchNorm counters)" in lines[0]
    assert load_weights(ResNet("resnet18", 8, "frozen_bn"), path, prefix="img_backbone").ok  # the dot is implied
    with pytest.raises(UserError) as e:
        load_weights(dst, path, prefix="backbone.")
    msg = str(e.value)
    assert "\n" not in msg and "no key starts with the prefix 'backbone.'" in msg
    assert "img_backbone., img_neck." in msg
    with pytest.raises(UserError, match=r"no tensor matches the encoder \(the file's keys start with img_backbone"):
        load_weights(dst, path)  # the prefix forgotten: nothing matches, the message says what the keys look like


def test_plain_resnet_wrong_architecture_is_refused_and_partial_reports(tmp_path):
    state = randomized(ResNet("resnet18", 8, "frozen_bn"))
    state["layer1.0.conv1.weight"] = torch.zeros(8, 8, 1, 1)  # one misshapen
    state["layer1.0.conv3.weight"] = torch.zeros(8, 8, 1, 1)  # one unexpected
    path = tmp_path / "r18.pt"
    torch.save(state, path)
    dst = ResNet("resnet34", 8, "frozen_bn")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(UserError) as e:
        load_weights(dst, path)
    msg = str(e.value)
    assert "\n" not in msg and "does not fit the encoder resnet34" in msg
    n_missing = int(re.search(r"(\d+) missing", msg).group(1))
    assert n_missing > 0 and "1 unexpected (layer1.0.conv3.weight)" in msg
    assert "1 misshapen (layer1.0.conv1.weight [8, 8, 1, 1] in file vs [8, 8, 3, 3])" in msg
    assert "--pretrained-partial" in msg
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in before.items())  # a refusal loads nothing
    lines = []
    report = load_weights(dst, path, partial=True, say=lines.append)
    assert len(report.missing) == n_missing and report.unexpected == ["layer1.0.conv3.weight"]
    assert [m[0] for m in report.misshapen] == ["layer1.0.conv1.weight"]
    assert torch.equal(dst.state_dict()["layer1.1.conv1.weight"], state["layer1.1.conv1.weight"])
    assert torch.equal(dst.state_dict()["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])
    text = "\n".join(lines)
    for kind in ("loaded", "missing", "unexpected", "misshapen", "ignored"):
        assert re.search(rf"^  {kind} +\d+", text, re.M), text


def test_safetensors_file_loads(tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file
    state = randomized(ResNet("resnet10", 8, "frozen_bn"))
    save_file(state, tmp_path / "r10.safetensors")
    dst = ResNet("resnet10", 8, "frozen_bn")
    assert load_weights(dst, tmp_path / "r10.safetensors").ok
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in state.items())
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(UserError, match="not a readable pretrained weights file"):
        load_weights(dst, tmp_path / "bad.safetensors")


# -- build_model: frozen BN needs weights ----------------------------------------------------------
def test_build_model_refuses_frozen_bn_without_weights(tmp_path):
    cfg = run_config(norm="frozen_bn")
    with pytest.raises(UserError) as e:
        build_model(cfg, 17)
    assert str(e.value) == FROZEN_BN_REFUSAL
    assert isinstance(build_model(cfg, 17, skip_norm_check=True), OccupancyNet)  # resume, init-from, timing
    path = tmp_path / "r10.pt"
    torch.save(randomized(ResNet("resnet10", 8, "frozen_bn")), path)
    lines = []
    model = build_model(cfg, 17, str(path), say=lines.append)
    assert model.pretrained_report.ok and lines and lines[0].startswith("pretrained: ")
    assert isinstance(build_model(run_config(norm="gn"), 17), OccupancyNet)  # GroupNorm trains from scratch


def test_timm_encoder_without_timm_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(UserError) as e:
        make_encoder(ModelConfig(encoder="timm:resnet50"))
    msg = str(e.value)
    assert "\n" not in msg and "needs timm and torchvision" in msg and "make install" in msg


def test_config_accepts_timm_names_only_in_that_form():
    assert load_config("demo", ['model.encoder="timm:convnext_base"']).model.encoder == "timm:convnext_base"
    for bad in ("resnet50", "timm:", "timm:two words"):
        with pytest.raises(UserError, match="model.encoder expects resnet10 | resnet18 | resnet34 | timm:NAME"):
            load_config("demo", [f'model.encoder="{bad}"'])


# -- timm ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, channels", [("resnet50", (512, 1024)), ("convnext_base", (256, 512)),
                                            (SWIN_B, (256, 512))])
def test_timm_backbones_give_stride_8_and_16_maps(name, channels):
    timm_or_skip()
    enc = make_encoder(ModelConfig(encoder=f"timm:{name}"))
    assert enc.out_channels == channels
    for h, w in ((96, 160), (90, 150)):  # Swin pads 90×150 to its patch size (4): any size works
        c8, c16 = enc(torch.randn(1, 3, h, w))
        assert c8.shape[:2] == (1, channels[0]) and c16.shape[:2] == (1, channels[1])
        assert c8.shape[-2:] in ((h // 8, w // 8), (-(-h // 8), -(-w // 8)))
        assert c16.shape[-2:] in ((h // 16, w // 16), (-(-h // 16), -(-w // 16)))


def test_timm_refusals_are_one_line():
    timm_or_skip()
    cases = [(dict(encoder="timm:resnet_fifty"), "has no model 'resnet_fifty'"),
             (dict(encoder="timm:vit_tiny_patch16_224"), "no stride-8 feature map"),
             (dict(encoder="timm:resnet50", norm="gn"), "gn' applies to the plain ResNet")]
    for kw, text in cases:
        with pytest.raises(UserError) as e:
            make_encoder(ModelConfig(**kw))
        assert text in str(e.value) and "\n" not in str(e.value)


def test_timm_resnet50_occupancy_net_trains_and_reloads_from_checkpoint(tmp_path):
    timm_or_skip()
    from renderocc.train.checkpoint import load_model

    torch.manual_seed(0)
    net = OccupancyNet(dataclasses.replace(TINY, encoder="timm:resnet50", norm="frozen_bn"), GRID)
    density, logits, depth = net(*inputs(h=32, w=64))
    assert density.shape == (1, 20, 20, 4) and depth.shape == (1, 2, 9, 4, 8)
    (density.mean() + logits.mean()).backward()
    trainable = [(n, p) for n, p in net.encoder.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable)  # DDP: every parameter used
    cfg = run_config(encoder="timm:resnet50", norm="frozen_bn")
    path = tmp_path / "last.pt"
    torch.save({"config": cfg.to_dict(), "model": net.state_dict(), "classes": [f"c{i}" for i in range(18)]}, path)
    again, _ = load_model(path)  # eval/predict: the weights come from the checkpoint, no refusal
    assert all(torch.equal(again.state_dict()[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_timm_resnet50_strict_round_trip(tmp_path, suffix):
    timm = timm_or_skip()
    state = timm_state(timm, "resnet50")
    path = tmp_path / f"resnet50{suffix}"
    if suffix == ".safetensors":
        pytest.importorskip("safetensors.torch").save_file(state, path)
    else:
        torch.save(state, path)
    enc = make_encoder(ModelConfig(encoder="timm:resnet50"))
    report = load_weights(enc, path)
    names = enc.weight_names()
    assert report.ok and all(torch.equal(v, state[names[k]]) for k, v in enc.state_dict().items())
    assert {k.split(".")[0] for k in report.ignored} == {"fc", "layer4", *{k.split(".")[0] for k in state
                                                                             if k.endswith("num_batches_tracked")}}
    # frozen BN is timm's eval-mode BN: the same features as timm's own features_only model
    ref = timm.create_model("resnet50", pretrained=False, features_only=True, out_indices=(2, 3))
    ref.load_state_dict({k: v for k, v in state.items() if not k.startswith(("fc.", "layer4."))})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(enc(x), ref.eval()(x), strict=True):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_timm_resnet50_file_into_the_plain_resnet_is_refused(tmp_path):
    timm = timm_or_skip()
    path = tmp_path / "resnet50.pt"
    torch.save(timm_state(timm, "resnet50"), path)
    with pytest.raises(UserError) as e:
        load_weights(ResNet("resnet34", 64, "frozen_bn"), path)
    msg = str(e.value)
    assert "\n" not in msg and re.search(r"\d+ missing[^;]*; [1-9]\d* unexpected[^;]*; [1-9]\d* misshapen", msg), msg
    lines = []
    report = load_weights(ResNet("resnet34", 64, "frozen_bn"), path, partial=True, say=lines.append)
    assert report.loaded and report.unexpected and report.misshapen and len(lines) == 6


@pytest.mark.parametrize("name", ["convnext_atto", "swin_tiny_patch4_window7_224"])
def test_timm_classifier_checkpoints_load_into_features_only_backbones(tmp_path, name):
    """features_only nets rename `stages.0` → `stages_0`; a timm classifier checkpoint still loads
    strictly, its head, final norm, last stage and computed buffers ignored by design (small
    members of the ConvNeXt and Swin families: the same naming as convnext_base and Swin-B)."""
    timm = timm_or_skip()
    state = timm_state(timm, name)
    if name.startswith("swin"):  # buffers some Swin checkpoints carry: computed by the model, tolerated
        state["layers.1.blocks.1.attn_mask"] = torch.zeros(4, 49, 49)
        state["layers.1.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    state["head.extra.weight"] = torch.zeros(2)  # a key of no module the backbone drops: not tolerated
    path = tmp_path / "w.pt"
    torch.save({"model": state}, path)
    enc = make_encoder(ModelConfig(encoder=f"timm:{name}"))
    with pytest.raises(UserError, match=r"; 1 unexpected \(head.extra.weight\);"):
        load_weights(enc, path)
    del state["head.extra.weight"]
    torch.save({"model": state}, path)
    report = load_weights(enc, path)
    names = enc.weight_names()
    assert report.ok and report.wrapper == "model"
    assert all(torch.equal(v, state[names[k]]) for k, v in enc.state_dict().items())
    assert {k.split(".")[0] for k in report.ignored} <= {"head", "norm", "stages", "layers"}
    assert not any(k.startswith(("stages.2.", "layers.2.")) for k in report.ignored)  # the used stages load


def test_timm_build_model_refuses_batch_norm_without_weights():
    timm_or_skip()
    with pytest.raises(UserError, match="has BatchNorm layers"):
        build_model(run_config(encoder="timm:resnet18", norm="frozen_bn"), 17)
    assert isinstance(build_model(run_config(encoder="timm:convnext_atto", norm="frozen_bn"), 17), OccupancyNet)


def test_timm_unused_parameters_are_frozen():
    """EfficientNet's feature net runs its later blocks too: their parameters never get a gradient,
    so they are frozen (DDP would otherwise wait for them) and BN+activation modules stay intact."""
    timm = timm_or_skip()
    enc = make_encoder(ModelConfig(encoder="timm:efficientnet_b0"))
    assert any(not p.requires_grad for p in enc.parameters())
    sum(f.mean() for f in enc(torch.randn(1, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
    state = timm_state(timm, "efficientnet_b0")
    ref = timm.create_model("efficientnet_b0", pretrained=False, features_only=True, out_indices=(2, 3))
    ref.load_state_dict({k: v for k, v in state.items() if not k.startswith(("conv_head", "bn2", "classifier"))})
    enc.load_state_dict({k: state[v] for k, v in enc.weight_names().items()})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(enc(x), ref.eval()(x), strict=True):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_timm_frozen_bn_keeps_the_autocast_dtype():
    timm_or_skip()
    enc = make_encoder(ModelConfig(encoder="timm:resnet18"))
    assert enc.batch_norms > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c8, c16 = enc(torch.randn(1, 3, 64, 64))
    assert c8.dtype == c16.dtype == torch.bfloat16
