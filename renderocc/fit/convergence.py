"""How a fit converges: its trace (loss, geometry IoU and mIoU at log-spaced iterations) as a
table for metrics.md and a picture (convergence.png), so a reader sees whether more iterations
would change the answer."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def mean_trace(rows: list[dict]) -> list[dict]:
    """Per traced iteration, the mean over samples of loss, geometry IoU and mIoU (samples share the
    iterations: they are fitted with the same count)."""
    traces = [r["trace"] for r in rows if r.get("trace")]
    if not traces:
        return []
    out = []
    for k, point in enumerate(traces[0]):
        at = [t[k] for t in traces if k < len(t)]
        out.append({"iter": point["iter"], "epoch": point.get("epoch"),
                    **{key: _mean([p.get(key) for p in at]) for key in ("loss", "geometry_iou", "miou")}})
    return out


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def table(rows: list[dict]) -> list[str]:
    """metrics.md lines: the mean trace, one row per traced iteration."""
    trace = mean_trace(rows)
    if not trace:
        return []

    def pct(v):
        return "–" if v is None else f"{100 * v:.2f}"

    lines = ["", "## Convergence (mean over samples; scored at each point at the threshold the rule picks then, on "
             "evenly spaced key rays)", "",
             "| iteration | epochs of label rays | training loss | geometry IoU | mIoU |", "|---:|---:|---:|---:|---:|"]
    for t in trace:
        ep = "–" if t["epoch"] is None else f"{t['epoch']:.2f}"
        loss = "–" if t["loss"] is None else f"{t['loss']:.4f}"
        lines.append(f"| {t['iter']} | {ep} | {loss} | {pct(t['geometry_iou'])} | {pct(t['miou'])} |")
    return lines


def plot(rows: list[dict], path: Path) -> Path | None:
    """convergence.png: loss (left) and geometry IoU / mIoU (right) against iterations, log scale,
    one thin line per sample and the mean thick; None when nothing was traced."""
    if not any(r.get("trace") for r in rows):
        return None
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in rows:
        t = r.get("trace") or []
        it = [p["iter"] for p in t]
        ax_loss.plot(it, [p["loss"] for p in t], color="0.7", lw=0.8)
        ax_iou.plot(it, [100 * (p["geometry_iou"] or 0) for p in t], color="tab:blue", lw=0.6, alpha=0.4)
        ax_iou.plot(it, [100 * (p["miou"] or 0) for p in t], color="tab:orange", lw=0.6, alpha=0.4)
    mean = mean_trace(rows)
    it = [p["iter"] for p in mean]
    ax_loss.plot(it, [p["loss"] for p in mean], color="k", lw=2, label="training loss (mean)")
    ax_iou.plot(it, [100 * (p["geometry_iou"] or 0) for p in mean], color="tab:blue", lw=2, label="geometry IoU")
    ax_iou.plot(it, [100 * (p["miou"] or 0) for p in mean], color="tab:orange", lw=2, label="mIoU")
    for r in rows:
        for key, colour in (("voxelize_geometry_iou", "tab:blue"), ("voxelize_miou", "tab:orange")):
            if r.get(key) is not None:
                ax_iou.axhline(100 * r[key], color=colour, ls=":", lw=0.8)
    for ax, title in ((ax_loss, "loss"), (ax_iou, "% inside mask_camera (dotted: voxelisation baseline)")):
        ax.set_xscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_loss.set_yscale("log")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
