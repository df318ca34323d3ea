"""Render a qa.json dict as one self-contained HTML page (plots as base64 PNG, no external files).

Self-contained so it can be attached to a ticket or a CI artefact and opened anywhere.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

from renderocc.qa import depth_labels as dl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from renderocc.classes import OCC3D_COLORS  # noqa: E402 - for reports written before vocabularies
from renderocc.qa.report import SUMMARY_KEYS  # noqa: E402

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.fail{color:#b00;font-weight:bold}.ok{color:#070}img{max-width:100%;border:1px solid #eee}
.wide{overflow-x:auto}td.t{text-align:left}.note{color:#555}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid img{max-width:560px}
.thumbs img{max-width:360px}figure{margin:0}figcaption{font-size:.8em;color:#555}
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _bar(labels, values, title, ylabel, colors=None, log=False) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(labels))
    ax.bar(x, values, color=colors, edgecolor="#444", linewidth=0.4)
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if log and np.any(np.asarray(values, float) > 0):
        ax.set_yscale("log")
    return _img(_png(fig), title)


def _class_colors(r: dict, n: int):
    """The report's class colours (its vocabulary; Occ3D for reports that predate it)."""
    colors = np.asarray((r.get("classes") or {}).get("colors") or OCC3D_COLORS, np.float64)
    return colors[:n] / 255.0


def _table(rows: list[dict], cols: list[str] | None = None, limit: int = 200) -> str:
    if not rows:
        return "<p>none</p>"
    cols = cols or list(rows[0])
    out = ["<div class='wide'><table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"]
    for r in rows[:limit]:
        out.append("<tr>" + "".join(_td(r.get(c)) for c in cols) + "</tr>")
    out.append("</table></div>")
    if len(rows) > limit:
        out.append(f"<p>… {len(rows) - limit} more in qa.json</p>")
    return "".join(out)


def _td(v) -> str:
    """A table cell: numbers right-aligned (CSS default here), text left-aligned."""
    return f"<td class='t'>{_fmt(v)}</td>" if isinstance(v, str) else f"<td>{_fmt(v)}</td>"


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _plots(r: dict) -> list[str]:
    plots = []
    h2d = r["class_histogram_2d"]
    if sum(h2d.values()):
        plots.append(_bar(list(h2d), list(h2d.values()), "2D semantic labels per class", "pixels",
                          _class_colors(r, len(h2d)), log=True))
    if r["class_histogram_gt"]:
        h = r["class_histogram_gt_camera"]
        plots.append(_bar(list(h), list(h.values()), "GT voxels per class (inside mask_camera)",
                          "voxels", _class_colors(r, len(h)), log=True))
    dh = r["depth_histogram"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.stairs(dh["counts"], dh["edges_m"], fill=True, color="#c8d6ea", label="all cameras")
    for name, counts in dh.get("per_camera", {}).items():
        ax.stairs(counts, dh["edges_m"], label=name, lw=1)
    ax.set_title("Depth labels (camera z)")
    ax.set_xlabel("metres (last bin: deeper)")
    ax.set_ylabel("pixels")
    ax.legend(fontsize=7, ncol=2)
    plots.append(_img(_png(fig), "depth histogram"))
    pc = r["per_camera"]
    plots.append(_bar(list(pc), [v["labelled_pixels_mean"] for v in pc.values()],
                      "Labelled pixels per image, by camera (mean)", "pixels"))
    lab = [im["labelled"] for im in r["images"]]
    if lab:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.hist(lab, bins=min(50, max(5, len(lab) // 4)), color="#6a9f58")
        ax.axvline(r["options"]["few_labels"], color="#b00", ls="--", label="few-labels threshold")
        ax.set_title("Labelled pixels per image")
        ax.set_xlabel("labelled pixels")
        ax.set_ylabel("images")
        ax.legend()
        plots.append(_img(_png(fig), "labelled pixels per image"))
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.hist([im["mean_luma"] for im in r["images"]], bins=32, range=(0, 255), color="#999")
        ax.axvline(r["options"]["dark_luma"], color="#b00", ls="--", label="dark threshold")
        ax.set_title("Mean luma per image")
        ax.set_xlabel("luma (0–255)")
        ax.legend()
        plots.append(_img(_png(fig), "mean luma"))
    if r["dynamic"]:
        d = r["dynamic"]["per_class"]
        plots.append(_bar(list(d), [v or 0.0 for v in d.values()],
                          "Share of 2D labels marked dynamic, per class", "share",
                          _class_colors(r, len(d))))
        dc = r["dynamic"]["per_camera"]
        plots.append(_bar(list(dc), [v or 0.0 for v in dc.values()],
                          "Share of labels marked dynamic, per camera", "share"))
    cov = r["coverage"]
    if cov and cov["per_sample"]:
        rows = cov["per_sample"]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        x = [row["sample"] for row in rows]
        ax.plot(x, [row["voxels_crossed_key"] / row["grid_voxels"] for row in rows], ".-",
                label="key rays")
        ax.plot(x, [row["voxels_crossed_all"] / row["grid_voxels"] for row in rows], ".-",
                label="key + auxiliary rays")
        ax.set_ylim(0, None)
        ax.set_title("Grid voxels crossed by a label ray")
        ax.set_xlabel("sample")
        ax.set_ylabel("share of the grid")
        ax.legend()
        plots.append(_img(_png(fig), "grid coverage per sample"))
    if cov and cov["per_sample"] and "gt_occupied" in cov["per_sample"][0]:
        rows = cov["per_sample"]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        x = [row["sample"] for row in rows]
        ax.plot(x, [row["gt_occupied_crossed_key"] / max(row["gt_occupied"], 1) for row in rows],
                ".-", label="key rays")
        ax.plot(x, [row["gt_occupied_crossed_all"] / max(row["gt_occupied"], 1) for row in rows],
                ".-", label="key + auxiliary rays")
        ax.set_ylim(0, 1)
        ax.set_title("GT occupied voxels crossed by a label ray")
        ax.set_xlabel("sample")
        ax.set_ylabel("share")
        ax.legend()
        plots.append(_img(_png(fig), "coverage per sample"))
    return plots


def thumbnails(reader, r: dict, n: int = 6) -> list[str]:
    """<figure>s of the images worth a look: dark ones, then those with the fewest labels.

    Each shows the stored image with its depth labels drawn on it, so a person sees at once
    whether a flag means a bad camera, a night scene or a projection problem.
    """
    picks = sorted(r["images"], key=lambda im: (im["mean_luma"] >= r["options"]["dark_luma"],
                                                im["labelled"]))[:n]
    out = []
    names = list(reader.cameras)
    for im in picks:
        c = names.index(im["camera"])
        img = reader.images(im["sample"])[c]
        lab = reader.labels(im["sample"])
        cam = reader.sample(im["sample"])["cameras"][im["camera"]]
        m = np.asarray(lab["camera"]) == c
        M = np.asarray(cam["K"], np.float64) @ np.linalg.inv(np.asarray(cam["K_orig"], np.float64))
        uv = np.stack([lab["u"][m], lab["v"][m], np.ones(int(m.sum()))], -1) @ M.T
        fig, ax = plt.subplots(figsize=(4, 4 * img.shape[0] / img.shape[1]))
        ax.imshow(img)
        ax.scatter(uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2], c=lab["depth"][m], cmap="turbo", vmin=0,
                   vmax=50, s=1, linewidths=0)
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        ax.set_axis_off()
        cap = (f"sample {im['sample']} · {im['scene']} · {im['camera']}: {im['labelled']} labels, "
               f"luma {im['mean_luma']:.0f}")
        out.append(f"<figure>{_img(_png(fig), cap)}<figcaption>{html.escape(cap)}</figcaption></figure>")
    return out


def render_html(r: dict, title: str, failures: list[str] | None = None,
                thumbs: list[str] | None = None, pictures: list[str] | None = None) -> str:
    """The full page as a string."""
    s = r["summary"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if failures:
        parts.append("".join(f"<p class='fail'>FAIL: {html.escape(f)}</p>" for f in failures))
    elif failures is not None:
        parts.append("<p class='ok'>All --fail-under thresholds met.</p>")
    st = r["store"]
    parts.append(f"<p>{s['samples']} samples · {s['images']} images · cameras "
                 f"{html.escape(', '.join(st['cameras']))} · stored image size "
                 f"{st['image_size'][0]}×{st['image_size'][1]} · Occ3D GT: "
                 f"{'yes' if st['has_occ_gt'] else 'no'} · motion masks: "
                 f"{'yes' if st['has_motion_masks'] else 'no'}</p>")
    if not sum(r["class_histogram_2d"].values()):
        parts.append("<p class='note'>No semantic labels in this store (no lidarseg): 2D class "
                     "statistics are empty and only depth supervision is available.</p>")
    parts.append("<h2>Summary</h2>" + _table([{"key": k, "value": v, "meaning": SUMMARY_KEYS.get(k, "")}
                                               for k, v in s.items()]))
    parts.append("<h2>Plots</h2><div class='grid'>" + "".join(_plots(r)) + "</div>")
    cams = [{"camera": k, **v} for k, v in r["per_camera"].items()]
    parts.append("<h2>Per camera</h2>" + _table(cams))
    parts.append("<h2>Per scene</h2>" + _table(r["per_scene"]))
    parts.append(depth_labels_html(r.get("depth_labels"), pictures))
    cols = ["sample", "scene", "camera", "labelled", "semantic", "mean_luma"]
    parts.append(f"<h2>Dark images (mean luma &lt; {r['options']['dark_luma']:g})</h2>"
                 + _table(r["dark_images"], cols))
    parts.append(f"<h2>Images with few labels (&lt; {r['options']['few_labels']} labelled pixels)"
                 "</h2>" + _table(r["few_label_images"], cols))
    if thumbs:
        parts.append("<h2>Images worth a look (darkest, then fewest labels; depth labels drawn)</h2>"
                     "<div class='grid thumbs'>" + "".join(thumbs) + "</div>")
    if r["coverage"]:
        parts.append("<h2>Ray coverage</h2><p>" + html.escape(r["coverage"]["note"]) + "</p>")
    if r.get("fit"):
        f = r["fit"]
        parts.append(f"<h2>Free-grid fit ({len(f['samples'])} samples, {f['iters']} iterations)</h2>"
                     f"<p>{html.escape(f['note'])}. mIoU {_fmt(f['miou'])}, geometry IoU "
                     f"{_fmt(f['geometry_iou'])}, label coverage {_fmt(f['label_coverage'])}; samples "
                     f"{html.escape(', '.join(map(str, f['samples'])))}.</p>"
                     + _table(f["per_class"], ["class", "iou", "iou_all_voxels", "label_coverage"]))
    parts.append("<h2>2D class histogram</h2>"
                 + _table([{"class": k, "pixels": v} for k, v in r["class_histogram_2d"].items()]))
    parts.append("</body></html>")
    return "\n".join(parts)



def _depth_label_plot(d: dict) -> str | None:
    """Per class, bars per condition: depth-outlier rate, and with masks drop-out share and mask disagreement."""
    rows = [r for r in d["per_class"] if r["class"] != "(no semantic label)"]
    if not rows:
        return None
    classes = list(dict.fromkeys(r["class"] for r in rows))
    conds = [c for c in d["conditions"] if c in d["per_condition"]]
    keys = ["depth_outlier_rate"] + (["dropout_share", "mask_disagreement_rate"] if d["has_masks"] else [])
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.4 * len(keys)), sharex=True, squeeze=False)
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(conds))
    cell = {(r["condition"], r["class"]): r for r in rows}
    for ax, key in zip(axes[:, 0], keys, strict=True):
        for j, cond in enumerate(conds):
            vals = [(cell.get((cond, c)) or {}).get(key) or 0.0 for c in classes]
            ax.bar(x + (j - (len(conds) - 1) / 2) * width, vals, width, label=cond)
        ax.set_ylabel(key.replace("_", " "), fontsize=8)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xticks(x, classes, rotation=60, ha="right", fontsize=8)
    axes[0, 0].set_title("Depth labels by surface class and condition")
    return _img(_png(fig), "depth labels by class and condition")


def depth_label_pictures(reader, r: dict) -> list[str]:
    """Per condition, the image with the largest drop-out share (with masks) or the most depth outliers:
    drop-out cells shaded magenta, labels coloured by depth, depth outliers as red crosses."""
    d, opts = r.get("depth_labels"), r["options"]
    if not d or not r["images"]:
        return []
    out = []
    names = list(reader.cameras)
    for cond in d["per_condition"]:
        rows = [im for im in r["images"] if im.get("condition") == cond]
        im = max(rows, key=lambda im: (im.get("dropout_share") or 0.0, im.get("depth_outliers", 0)))
        c = names.index(im["camera"])
        img = reader.images(im["sample"])[c]
        lab = reader.labels(im["sample"])
        cam = reader.sample(im["sample"])["cameras"][im["camera"]]
        sel = (np.asarray(lab["camera"]) == c) & np.isfinite(lab["depth"]) & (lab["depth"] > 0)
        u, v, depth = lab["u"][sel].astype(np.float64), lab["v"][sel].astype(np.float64), lab["depth"][sel]
        K, K_orig = np.asarray(cam["K"], np.float64), np.asarray(cam["K_orig"], np.float64)
        _, outl = dl.depth_outliers(u, v, depth.astype(np.float64), K_orig[0, 0] * np.tan(np.deg2rad(dl.NEIGHBOUR_DEG)),
                                    opts["outlier_neighbours"], opts["outlier_threshold"])
        iu, iv = dl.to_stored(u, v, K, K_orig)
        fig, ax = plt.subplots(figsize=(4.5, 4.5 * img.shape[0] / img.shape[1]))
        ax.imshow(img)
        masks = reader.semantic_mask(im["sample"]) if getattr(reader, "has_semantic_masks", False) else None
        if masks is not None:
            cells = dl.dropout_cells(iu, iv, masks[c], K, cam["cam2ego"], opts["dropout_reach"],
                                     reader.vocabulary.num_semantic)
            cs = cells["cell_px"]
            shade = np.kron(cells["cells"], np.ones((cs, cs)))[:img.shape[0], :img.shape[1]]
            ax.imshow(np.dstack([np.ones_like(shade), np.zeros_like(shade), np.ones_like(shade), 0.45 * shade]))
        ax.scatter(iu[~outl], iv[~outl], c=depth[~outl], cmap="turbo", vmin=0, vmax=50, s=1, linewidths=0)
        ax.scatter(iu[outl], iv[outl], c="red", marker="x", s=6, linewidths=0.6)
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        ax.set_axis_off()
        share = im.get("dropout_share")
        cap = (f"{cond} · sample {im['sample']} · {im['camera']}: {im['labelled']} labels, "
               f"{im.get('depth_outliers', 0)} depth outliers (red)"
               + (f", drop-out {100 * share:.1f}% of in-reach mask area (magenta)" if share is not None else ""))
        out.append(f"<figure>{_img(_png(fig), cap)}<figcaption>{html.escape(cap)}</figcaption></figure>")
    return out


def depth_labels_html(d: dict | None, pictures: list[str] | None) -> str:
    """The 'Depth labels by condition and surface class' section."""
    if not d:
        return ""
    parts = ["<h2>Depth labels by condition and surface class</h2><p class='note'>"
             + "<br>".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in d["definitions"].items())
             + (" " if d["has_masks"] else "<br>No 2D masks in this store (renderocc prep masks): drop-outs and "
                "mask disagreement are left out.") + "</p>"]
    parts.append(_table([{"condition": k, **v} for k, v in d["per_condition"].items()]))
    plot = _depth_label_plot(d)
    if plot or pictures:
        parts.append("<div class='grid'>" + (plot or "") + "".join(pictures or []) + "</div>")
    parts.append("<h3>Per class</h3>" + _table(d["per_class"]))
    if d.get("confusion_top_pairs"):
        parts.append("<h3>Where the LiDAR class and the 2D mask disagree (top pairs)</h3>"
                     + _table(d["confusion_top_pairs"]))
    return "".join(parts)
