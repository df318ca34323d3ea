"""Pretrained image-backbone weights from a local file, loaded strictly.

A weights file is read without running code (`.safetensors`, or a torch file through
`safe_load.load_plain`), unwrapped (`state_dict` / `ema` / `model` tables, as mmdet3d/BEVDet, timm and
renderocc checkpoints hold them), optionally cut to the keys under a prefix (`img_backbone.`), and
matched to the encoder's own keys by name. Loading is strict by default: a silent partial load
(a ResNet-50 file half-filling a ResNet-34) trains a different model than the one asked for.

What a strict load tolerates (reported as `ignored`, never an error), and nothing else:

- keys of modules the encoder drops by design (`encoder.dropped_by_design(key)`): the classifier
  (`fc.*`, `head.*`, `classifier.*`), the final norm and the stages after stride 16;
- `X.num_batches_tracked` where the encoder's `X` is a frozen BatchNorm (a counter, not a weight);
- buffers the model computes itself (non-persistent buffers such as `relative_position_index`).

Names in the report are as the file holds them (after the prefix is stripped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from renderocc.errors import UserError
from renderocc.safe_load import load_plain, require_file

WRAPPERS = ("state_dict", "ema", "model")  # tables a checkpoint nests its weights in, tried in this order
WHAT = "pretrained weights file"
SHOW = 3  # names shown per kind in the one-line refusal


@dataclass(frozen=True)
class WeightsReport:
    """What a load did; names as the file holds them."""

    loaded: list[str] = field(default_factory=list)      # set from the file
    missing: list[str] = field(default_factory=list)     # encoder tensors the file lacks (left at init)
    unexpected: list[str] = field(default_factory=list)  # file tensors the encoder has no place for
    misshapen: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (name, file, ours)
    ignored: list[str] = field(default_factory=list)     # tolerated by design (see the module docstring)
    wrapper: str = ""                                    # the table the weights came from ("" when top level)

    @property
    def ok(self) -> bool:
        """True when a strict load accepts the file."""
        return not (self.missing or self.unexpected or self.misshapen)


def _is_tensor_table(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _key_prefixes(keys, n: int = 5) -> list[str]:
    """Up to `n` distinct first components of dotted keys, in file order (`img_backbone.`, ...)."""
    seen: list[str] = []
    for k in keys:
        p = k.split(".", 1)[0] + "." if "." in k else k
        if p not in seen:
            seen.append(p)
            if len(seen) == n:
                break
    return seen


def read_state_dict(path: str | Path, prefix: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors by name, wrapper table used) from a `.safetensors` or torch file; with `prefix`, only
    the keys that start with it, prefix stripped. Anything unreadable is one `UserError` line."""
    path = Path(path)
    if path.suffix == ".safetensors":
        require_file(path, WHAT)
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{path}: reading .safetensors needs the safetensors package "
                            "(`make install` installs it; or pip install safetensors)") from None
        try:
            obj: Any = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable {WHAT} ({e.__class__.__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    else:
        obj = load_plain(path, WHAT)
    wrapper: list[str] = []
    while isinstance(obj, dict) and not _is_tensor_table(obj):
        key = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj, wrapper = obj[key], [*wrapper, key]
    if not _is_tensor_table(obj) or not all(isinstance(k, str) for k in obj):
        top = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"{path}: holds no state_dict of tensors (found: {top or 'nothing'})")
    state = dict(obj)
    if prefix:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not picked:
            raise UserError(f"{path}: no key starts with the prefix {prefix!r} "
                            f"(key prefixes there: {', '.join(_key_prefixes(state))})")
        state = picked
    return state, ".".join(wrapper)


def _computed_buffers(module: nn.Module) -> set[str]:
    """Names of the non-persistent buffers (computed by the module, never in its state_dict)."""
    return {f"{name}.{b}" if name else b for name, m in module.named_modules()
            for b in getattr(m, "_non_persistent_buffers_set", ())}


def match(encoder: nn.Module, state: dict[str, torch.Tensor]) -> tuple[WeightsReport, dict[str, torch.Tensor]]:
    """(report, own key → tensor to load) for `state` against `encoder`; loads nothing.

    The encoder may name where its tensors sit in a checkpoint (`weight_names()`: own key → file key;
    timm's features-only models rename `stages.0` to `stages_0`) and which file keys belong to modules
    it drops (`dropped_by_design(key)`); a file in the encoder's own naming is accepted too."""
    own = encoder.state_dict()
    names: dict[str, str] = encoder.weight_names() if hasattr(encoder, "weight_names") else {k: k for k in own}
    dropped: Callable[[str], bool] = getattr(encoder, "dropped_by_design", lambda key: False)
    computed = {names.get(k, k) for k in _computed_buffers(encoder)}
    loaded, missing, misshapen, chosen, used = [], [], [], {}, set()
    for key, ours in own.items():
        src = names.get(key, key)
        name = src if src in state else key if key in state else None
        if name is None:
            missing.append(src)
            continue
        used.add(name)
        if tuple(state[name].shape) != tuple(ours.shape):
            misshapen.append((name, tuple(state[name].shape), tuple(ours.shape)))
            continue
        loaded.append(src)
        chosen[key] = state[name]
    src_names = set(names.values())
    unexpected, ignored = [], []
    for key in state:
        if key in used:
            continue
        bn_counter = (key.endswith(".num_batches_tracked")
                      and key[: -len("num_batches_tracked")] + "running_mean" in src_names)
        (ignored if bn_counter or key in computed or dropped(key) else unexpected).append(key)
    return WeightsReport(loaded, missing, unexpected, misshapen, ignored), chosen


def _names(items: list, n: int = SHOW) -> str:
    return ", ".join(items[:n]) + (", …" if len(items) > n else "")


def _ignored_summary(ignored: list[str], n: int = 4) -> str:
    """`fc.*, layer4.0.*, … + 53 BatchNorm counters`: the modules, not each tensor."""
    counters = [k for k in ignored if k.endswith(".num_batches_tracked")]
    groups: list[str] = []
    for k in ignored:
        if k in counters:
            continue
        parts = k.split(".")
        g = ".".join(parts[:2] if len(parts) > 2 and parts[1].isdigit() else parts[:1]) + ".*"
        if g not in groups:
            groups.append(g)
    text = _names(groups, n)
    if counters:
        text += f"{' + ' if text else ''}{len(counters)} BatchNorm counters"
    return text


def mismatch_text(r: WeightsReport) -> str:
    """`N missing (a, b, …); N unexpected (…); N misshapen (name [file] in file vs [ours], …)`: what a
    strict load refuses, for any module's one-line refusal."""
    parts = [f"{len(r.missing)} missing" + (f" ({_names(r.missing)})" if r.missing else ""),
             f"{len(r.unexpected)} unexpected" + (f" ({_names(r.unexpected)})" if r.unexpected else "")]
    shapes = [f"{k} {list(a)} in file vs {list(b)}" for k, a, b in r.misshapen]
    parts.append(f"{len(r.misshapen)} misshapen" + (f" ({_names(shapes)})" if shapes else ""))
    return "; ".join(parts)


def _refusal(path: Path, encoder_name: str, r: WeightsReport, state: dict[str, torch.Tensor]) -> str:
    total = len(r.loaded) + len(r.missing) + len(r.misshapen)
    if not r.loaded:
        hint = (f"no tensor matches the encoder (the file's keys start with {', '.join(_key_prefixes(state))}: "
                "a prefix selects the backbone's)")
    else:
        hint = f"{len(r.loaded)} of {total} encoder tensors match; --pretrained-partial loads only those"
    return f"{path}: does not fit the encoder {encoder_name}: {mismatch_text(r)}; {hint}"


def table(r: WeightsReport, n: int = SHOW) -> list[str]:
    """The report as aligned lines: count and first names of each kind."""
    total = len(r.loaded) + len(r.missing) + len(r.misshapen)
    shapes = [f"{k} {list(a)} in file vs {list(b)}" for k, a, b in r.misshapen]
    rows = [("loaded", f"{len(r.loaded)} of {total} encoder tensors"),
            ("missing", f"{len(r.missing)}  {_names(r.missing, n)}".rstrip()),
            ("unexpected", f"{len(r.unexpected)}  {_names(r.unexpected, n)}".rstrip()),
            ("misshapen", f"{len(shapes)}  {_names(shapes, n)}".rstrip()),
            ("ignored", f"{len(r.ignored)}  {_ignored_summary(r.ignored)}".rstrip())]
    return [f"  {k:<11}{v}" for k, v in rows]


def load_weights(encoder: nn.Module, path: str | Path, *, prefix: str | None = None, partial: bool = False,
                 say: Callable[[str], None] | None = None) -> WeightsReport:
    """Load a local weights file into `encoder`, strictly unless `partial`; returns the report.

    Strict: any missing encoder tensor, any unexpected file tensor that is not tolerated (module
    docstring) or any shape mismatch is one `UserError` line with the counts and first names, and
    nothing is loaded. `partial`: what matches is loaded, the rest stays at init, and the table goes
    to `say`. Either way a file that matches no tensor at all is refused."""
    path = Path(path)
    state, wrapper = read_state_dict(path, prefix)
    report, chosen = match(encoder, state)
    report = WeightsReport(report.loaded, report.missing, report.unexpected, report.misshapen, report.ignored,
                           wrapper)
    name = getattr(encoder, "name", type(encoder).__name__)
    if not report.loaded or (not partial and not report.ok):
        raise UserError(_refusal(path, name, report, state))
    result = encoder.load_state_dict(chosen, strict=False)
    if result.unexpected_keys:  # every chosen key is the encoder's own: this cannot happen
        raise RuntimeError(f"internal error: keys not loaded {result.unexpected_keys[:3]}")
    if say is not None:
        where = f"{path}" + (f" [{wrapper}]" if wrapper else "") + (f" prefix {prefix!r}" if prefix else "")
        if partial:
            say(f"pretrained (partial): {where} → {name}")
            for line in table(report):
                say(line)
        else:
            say(f"pretrained: {where} → {name}: {len(report.loaded)} tensors loaded"
                + (f", {len(report.ignored)} ignored by design ({_ignored_summary(report.ignored)})"
                   if report.ignored else ""))
    return report
