"""Label efficiency: the same model and steps under several supervision settings, three seeds each,
scored on a held-out synthetic scene against both synthetic truths.

    python benchmarks/label_efficiency.py [--work DIR] [--worlds random:3 | 0,17,...] [--steps N]
                                          [--seeds 0,1,2] [--config demo] [--variants 2d,3d,...]
                                          [--truths occ3d,world] [--set k=v ...]

One run does everything, per world: writes (or reuses, under --work) a synthetic train split
(generator seed w) and a held-out scene (seed w + 1) with the Occ3D-style truth (and, with `--truths
...,world`, the same held-out scene with the solid-world truth), preps the train split (with and
without LiDAR sweeps when a variant needs it), adds motion masks, then trains every variant × seed and
evaluates each on the held-out stores (`renderocc eval --split all`). `--worlds random:N` draws N
generator seeds at random (printed, and recorded in the results), so nothing is tuned on one world;
`--worlds 0` is the project's original world. Results are reported per world and overall (mean ±
std over every world × seed run; the 2D/3D ratio overall is the ratio of those means, per world the
ratio of that world's means):

  2d                2D labels only: rendering losses and the label rays read voxel by voxel (the
                    config's loss.label_voxels), auxiliary rays (±3 frames), motion masks, sweeps,
                    free beams
  2d-rendered-only  2d with the rendering losses alone (loss.label_voxels 0)
  3d                dense voxel loss (Occ3D-style GT inside mask_camera)
  mixed             rendering + dense voxel loss
  2d-prev-losses    2d with the losses the demo had before termination and a stronger lift loss
  2d-no-aux         2d without auxiliary rays
  2d-no-motion      2d with auxiliary rays but without motion masks (dynamic labels kept)
  2d-no-free-beams  2d without the no-return LiDAR beams (when the config has them)
  2d-no-sweeps      2d trained on a store prepped without LiDAR sweeps

Results: benchmarks/results/label_efficiency.{md,json}: mean ± std over seeds (floaters: voxels
above 2 m predicted occupied but free in GT, inside mask_camera, per sample); an ablation's
effect counts only when |Δ mean| > 2 × the larger std. Every run records the git commit, the
package's tree hash and the config's digest; a run is reused only when the package tree and the
digest match and the package had no uncommitted changes, so numbers made by other code are never
reused.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
SWEEPS = 4  # the synthetic LiDAR writes 4 sweeps between keyframes
VARIANTS = [  # name, description, overrides, train store
    ("2d", "2D labels only (rendered and voxel-read label rays, aux rays, motion masks, sweeps)",
     ["supervision='2d'"], "train"),
    ("3d", "dense 3D voxel loss only (GT inside mask_camera)", ["supervision='3d'"], "train"),
    ("2d-rendered-only", "2d without the voxel reading of the label rays (loss.label_voxels 0: rendering only)",
     ["supervision='2d'", "loss.label_voxels=0"], "train"),
    ("2d-label-voxels-5", "2d with the label rays read voxel by voxel at 5× the 3D loss's weight",
     ["supervision='2d'", "loss.label_voxels=5"], "train"),
    ("mixed", "2D rendering + dense 3D voxel loss", ["supervision='mixed'"], "train"),
    ("2d-prev-losses", "2d with the previous demo losses (no termination, lss_depth 0.2)",
     ["supervision='2d'", "loss.termination=0", "loss.lss_depth=0.2"], "train"),
    ("2d-no-aux", "2d without auxiliary rays", ["supervision='2d'", "data.aux_frames=0"], "train"),
    ("2d-no-motion", "2d, aux rays WITHOUT motion masks", ["supervision='2d'", "data.use_motion_masks=false"],
     "train"),
    ("2d-no-free-beams", "2d without no-return LiDAR beams", ["supervision='2d'", "loss.free_beams=0"], "train"),
    ("2d-no-sweeps", "2d on a store prepped without LiDAR sweeps", ["supervision='2d'"], "train-nosweeps"),
]
METRICS = ("miou", "geometry_iou", "miou_nomask", "depth_abs_rel", "sem2d_miou", "floaters")
FITS = [  # name, description, fit flags: the supervision ceiling of the 2d variants, without a network
    ("fit-2d", "2D labels, aux rays ±3, motion masks", []),
    ("fit-key-only", "2D labels, key rays only", ["--aux-frames", "0"]),
    ("fit-no-motion", "2D labels, aux rays WITHOUT motion masks", ["--no-motion-masks"]),
    ("fit-3d", "dense GT inside mask_camera (checks the fit itself)", ["--supervision", "3d"]),
]


def renderocc(*args: str, log: Path | None = None) -> None:
    cmd = [str(BIN / "renderocc"), *args]
    print("$ " + " ".join(cmd), flush=True)
    if log is None:
        subprocess.run(cmd, check=True)
        return
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def code_version() -> dict:
    """The git commit, the tree hash of the package (what decides reuse: a docs-only commit keeps
    runs valid, any code change does not) and whether the package had uncommitted changes."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or "unknown", "code_tree": git("rev-parse", "HEAD:renderocc"),
            "dirty": bool(git("status", "--porcelain", "--", "renderocc"))}


def world_seeds(spec: str) -> list[int]:
    """`random:N` → N distinct generator seeds drawn from the OS's randomness; `a,b,...` → those."""
    if spec.startswith("random:"):
        n = int(spec.split(":", 1)[1])
        rng = random.SystemRandom()
        return sorted(rng.sample(range(2, 100_000), n))
    return [int(x) for x in spec.split(",") if x.strip()]


def build_data(work: Path, image_size: str, scenes: int, world: int = 0, names: tuple[str, ...] | None = None
               ) -> dict[str, Path]:
    """Synthetic splits of generator seed `world` (held out: `world` + 1) → stores with motion masks
    (reused when the recorded recipe matches); `names`: the stores to build (default: all)."""
    recipe = {"image_size": image_size, "scenes": scenes, "sweeps": SWEEPS, "world": world,
              "code": code_version()["code_tree"]}
    stores = {}
    jobs = [("train", scenes, world, "occ3d", SWEEPS), ("train-nosweeps", scenes, world, "occ3d", 0),
            ("val", 1, world + 1, "occ3d", 0), ("val-world", 1, world + 1, "world", 0)]
    for name, n_scenes, seed, gt, sweeps in jobs:
        if names is not None and name not in names:
            continue
        synth = work / f"synth-{'train' if name.startswith('train') else name}"
        store = work / f"store-{name}"
        done = store / ".label_efficiency_done"
        if done.exists() and json.loads(done.read_text()) == recipe:
            print(f"reusing {store}")
        else:
            shutil.rmtree(store, ignore_errors=True)
            if not (synth / ".recipe").exists() or json.loads((synth / ".recipe").read_text()) != recipe:
                renderocc("synth", "nuscenes", "--out", str(synth), "--scenes", str(n_scenes), "--samples-per-scene",
                          "10", "--seed", str(seed), "--gt", gt, "--overwrite")
                (synth / ".recipe").write_text(json.dumps(recipe))
            renderocc("prep", "nuscenes", "--dataroot", str(synth), "--version", "v1.0-mini", "--out", str(store),
                      "--image-size", image_size, "--sweeps", str(sweeps))
            renderocc("prep", "motion-masks", "--store", str(store), "--dataroot", str(synth), "--no-progress")
            done.write_text(json.dumps(recipe))
        stores[name] = store
    return stores


def config_digest(config: str, overrides: list[str]) -> str:
    from renderocc.config import load_config

    return load_config(config, overrides).digest()


def run_one(name: str, seed: int, overrides: list[str], train_store: Path, val_stores: dict[str, Path],
            args, version: dict, work: Path | None = None) -> dict:
    """Train (or reuse) one variant × seed and evaluate it on every held-out store."""
    run = (work or args.work) / "runs" / f"{name}-s{seed}"
    ov = [*overrides, f"seed={seed}", f"train.max_steps={args.steps}"]
    spec = {"config": args.config, "overrides": ov, "digest": config_digest(args.config, ov),
            "store": train_store.name, "code_tree": version["code_tree"]}
    marker, ckpt = run / "run.json", run / "last.pt"
    old = json.loads(marker.read_text()) if marker.exists() else {}
    reuse = (not args.fresh and not version["dirty"] and ckpt.exists()
             and {k: old.get(k) for k in spec} == spec and not old.get("dirty", True))
    if not reuse:
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        t = time.time()
        renderocc("train", "--store", str(train_store), "--out", str(run), "--config", args.config,
                  *[a for o in ov for a in ("--set", o)], log=run / "train.log")
        marker.write_text(json.dumps({**spec, "commit": version["commit"], "dirty": version["dirty"],
                                      "train_wall_s": round(time.time() - t, 1)}))
        for ev in run.glob("eval-*"):
            shutil.rmtree(ev)
    else:
        print(f"reusing {run} (code {spec['code_tree'][:10]}, config {spec['digest']})")
    info = json.loads(marker.read_text())
    row = {"variant": name, "seed": seed, "digest": spec["digest"], "commit": info["commit"],
           "dirty": info["dirty"], "train_wall_s": info.get("train_wall_s")}
    for truth, store in val_stores.items():
        ev = run / f"eval-{truth}"
        if not (ev / "metrics.json").exists():
            renderocc("eval", "--store", str(store), "--ckpt", str(ckpt), "--out", str(ev), "--split", "all",
                      "--quiet", "--device", "cpu", log=run / f"eval-{truth}.log")
        m = json.loads((ev / "metrics.json").read_text())
        floaters = (m.get("floaters_above_2m") or {}).get("per_sample_mask_camera")
        row[truth] = {k: m.get(k) for k in METRICS if k != "floaters"} | {
            "floaters": floaters, "floaters_above_2m": m.get("floaters_above_2m"),
            "iou_per_class": m.get("iou_per_class"), "threshold": m.get("threshold")}
    return row


def run_fits(args, val_stores: dict[str, Path], version: dict) -> dict:
    """`renderocc fit` on the held-out scene: how much of it the 2D labels determine with the 2d
    variant's losses and no network, beside the 3D fit (≈1.0 inside mask_camera by construction)."""
    samples = args.fit_samples
    out: dict = {}
    for name, _desc, flags in FITS:
        spec = {"flags": flags, "samples": samples, "config": args.config, "overrides": args.overrides,
                "code_tree": version["code_tree"], "iters": args.fit_iters}
        per_truth = ["occ3d", "world"] if "3d" in flags else ["occ3d"]
        for truth in per_truth:
            d = args.work / "fits" / f"{name}-{truth}"
            marker = d / "fit.json"
            if (args.fresh or version["dirty"] or not marker.exists()
                    or json.loads(marker.read_text()).get("spec") != spec):
                shutil.rmtree(d, ignore_errors=True)
                d.parent.mkdir(parents=True, exist_ok=True)
                renderocc("fit", "--store", str(val_stores[truth]), "--out", str(d), "--indices", samples,
                          "--iters", str(args.fit_iters), "--config", args.config, "--quiet",
                          *[a for o in args.overrides for a in ("--set", o)], *flags, log=d.parent / f"{d.name}.log")
                marker.write_text(json.dumps({"spec": spec, "commit": version["commit"]}))
            m = json.loads((d / "metrics.json").read_text())
            out.setdefault(name, {})[truth] = {k: m.get(k) for k in ("miou", "geometry_iou", "miou_nomask")} | {
                "label_coverage": m.get("label_coverage"), "iou_per_class": m.get("iou_per_class")}
        if "occ3d" in per_truth and len(per_truth) == 1:  # same rays, other truth: score, don't refit
            pred = args.work / "fits" / f"{name}-occ3d"
            ev = pred.parent / f"{name}-world-eval"
            if not (ev / "metrics.json").exists() or ev.stat().st_mtime < (pred / "metrics.json").stat().st_mtime:
                renderocc("eval", "--pred", str(pred), "--store", str(val_stores["world"]), "--out", str(ev),
                          "--split", "all", "--allow-missing", "--no-rayiou", "--quiet",
                          log=pred.parent / f"{ev.name}.log")
            m = json.loads((ev / "metrics.json").read_text())
            out[name]["world"] = {k: m.get(k) for k in ("miou", "geometry_iou", "miou_nomask")} | {
                "label_coverage": None, "iou_per_class": m.get("iou_per_class")}
    return out


def fit_table(fits: dict, truth: str) -> str:
    def pct(v) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    desc = {f[0]: f[1] for f in FITS}
    lines = ["| fit (no network) | mIoU % | geometry IoU % | label coverage % |", "|---|---:|---:|---:|"]
    for name, rows in fits.items():
        r = rows[truth]
        lines.append(f"| {name}: {desc[name]} | {pct(r['miou'])} | {pct(r['geometry_iou'])} | "
                     f"{pct(r.get('label_coverage'))} |")
    return "\n".join(lines)


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else float("nan")


def summarise(rows: list[dict], truth: str, names: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    return {n: {k: mean_std([r[truth][k] for r in rows if r["variant"] == n]) for k in METRICS} for n in names
            if any(r["variant"] == n for r in rows)}


def ratio_line(summary: dict, what: str) -> str:
    """2D-only against 3D-only for one world or overall: mIoU ratio, geometry and floaters side by side."""
    if "2d" not in summary or "3d" not in summary or not summary["3d"]["miou"][0] > 0:
        return ""
    a, b = summary["2d"], summary["3d"]
    return (f"| {what} | {100 * a['miou'][0]:.1f} | {100 * b['miou'][0]:.1f} | **{a['miou'][0] / b['miou'][0]:.2f}** | "
            f"{100 * a['geometry_iou'][0]:.1f} | {100 * b['geometry_iou'][0]:.1f} | {a['floaters'][0]:.0f} | "
            f"{b['floaters'][0]:.0f} |")


def world_table(rows: list[dict], truth: str, worlds: list[int]) -> str:
    """2D-only against 3D-only per world and overall (targets: ratio ≥ 0.85 overall, ≥ 0.75 per world;
    geometry IoU and floaters no worse than 3D-only's)."""
    ran = list(dict.fromkeys(r["variant"] for r in rows))
    two = "2d" if "2d" in ran else next((v for v in ran if v.startswith("2d")), "2d")  # the 2D variant compared
    lines = ([] if two == "2d" else [f"2d: `{two}`.", ""]) + [
        "| world (generator seed) | 2d mIoU % | 3d mIoU % | 2d / 3d | 2d geometry IoU % | 3d geometry IoU % | "
        "2d floaters > 2 m | 3d floaters > 2 m |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for w in worlds:
        line = ratio_line(rename(summarise([r for r in rows if r["world"] == w], truth, [two, "3d"]), two), str(w))
        if line:
            lines.append(line)
    line = ratio_line(rename(summarise(rows, truth, [two, "3d"]), two), f"overall ({len(worlds)} worlds)")
    return "\n".join(lines + ([line] if line else []))


def class_table(rows: list[dict], truth: str) -> str:
    """Where the 2D variant loses to 3D-only: IoU per class (mean over every world × seed run; a class a
    run neither predicts nor holds is left out of its mean), the largest gaps first."""
    ran = list(dict.fromkeys(r["variant"] for r in rows))
    two = "2d" if "2d" in ran else next((v for v in ran if v.startswith("2d")), None)
    if two is None or "3d" not in ran:
        return ""
    per = {}
    for name in (two, "3d"):
        for r in rows:
            if r["variant"] == name and r[truth].get("iou_per_class"):
                for cls, v in r[truth]["iou_per_class"].items():
                    per.setdefault(cls, {}).setdefault(name, []).append(v)
    gaps = []
    for cls, by in per.items():
        a, b = (mean_std(by.get(n, []))[0] for n in (two, "3d"))
        if a == a and b == b and cls != "free":
            gaps.append((b - a, cls, a, b))
    lines = [f"| class | {two} IoU % | 3d IoU % | 3d − {two} |", "|---|---:|---:|---:|"]
    lines += [f"| {cls} | {100 * a:.1f} | {100 * b:.1f} | {100 * g:+.1f} |" for g, cls, a, b in
              sorted(gaps, reverse=True)]
    return "\n".join(lines)


def rename(summary: dict, two: str) -> dict:
    """`summary` with the 2D variant `two` under the key "2d" (what `ratio_line` compares)."""
    return {("2d" if k == two else k): v for k, v in summary.items()}


def table(summary: dict, desc: dict[str, str], seeds: int) -> str:
    def pm(v: tuple[float, float], pct: bool = True, digits: int = 3) -> str:
        m, s = v
        f = 100 if pct else 1
        return "–" if m != m else (f"{f * m:.1f} ± {f * s:.1f}" if pct else f"{m:.{digits}f} ± {s:.{digits}f}")

    lines = [f"| variant ({seeds} seeds) | mIoU % | geometry IoU % | mIoU no mask % | depth AbsRel | 2D sem mIoU % "
             "| floaters > 2 m per sample | vs 2d (mIoU) |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    base = summary.get("2d")
    for n, s in summary.items():
        effect = ""
        if base and n != "2d":
            d = s["miou"][0] - base["miou"][0]
            noise = 2 * max(s["miou"][1], base["miou"][1])
            effect = f"{100 * d:+.1f} ({'exceeds' if abs(d) > noise else 'within'} 2 std)"
        lines.append(f"| {n}: {desc[n]} | {pm(s['miou'])} | {pm(s['geometry_iou'])} | {pm(s['miou_nomask'])} | "
                     f"{pm(s['depth_abs_rel'], False)} | {pm(s['sem2d_miou'])} | {pm(s['floaters'], False, 0)} | "
                     f"{effect} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="data + runs folder to (re)use (default: a fresh temp dir)")
    ap.add_argument("--worlds", default="random:3",
                    help="random:N (N generator seeds drawn at random, printed) or comma-separated seeds (0: the "
                         "project's original world)")
    ap.add_argument("--config", default="demo")
    ap.add_argument("--steps", type=int, help="training steps of every run (default: the config's max_steps)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scenes", type=int, default=2, help="synthetic training scenes (10 keyframes each)")
    ap.add_argument("--image-size", default="192x108", help="stored WxH (the demo feeds the network 96x176)")
    ap.add_argument("--variants", default=",".join(v[0] for v in VARIANTS), help="comma-separated subset")
    ap.add_argument("--truths", default="occ3d", help="held-out truths to score against: occ3d and/or world")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra key=value for every run")
    ap.add_argument("--fresh", action="store_true", help="retrain and re-evaluate even when results exist")
    ap.add_argument("--fit-samples", default="", help="held-out samples of the first world `renderocc fit` fits "
                                                      "('' skips the fits)")
    ap.add_argument("--fit-iters", type=int, default=100, help="fit iterations per sample")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args()

    from renderocc.config import load_config

    cfg = load_config(args.config, args.overrides)
    args.steps = args.steps or cfg.train.max_steps
    args.work = args.work or Path(tempfile.mkdtemp(prefix="label_efficiency_"))
    args.work.mkdir(parents=True, exist_ok=True)
    version = code_version()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    worlds = world_seeds(args.worlds)
    truths = [t for t in args.truths.split(",") if t]
    if not worlds or any(t not in ("occ3d", "world") for t in truths) or not truths:
        raise SystemExit("--worlds needs at least one seed; --truths takes occ3d and/or world")
    print(f"worlds (generator seeds of the training splits; held out: +1): {worlds}", flush=True)
    known = {v[0]: v for v in VARIANTS}
    wanted = [v for v in args.variants.split(",") if v]
    for name in wanted:
        if name not in known:
            raise SystemExit(f"unknown variant {name!r} (known: {', '.join(known)})")
        load_config(args.config, [*args.overrides, *known[name][2]])  # fail early on a bad override
    t0 = time.time()
    rows, fits = [], {}
    for w in worlds:
        work = args.work / f"world-{w}"
        need = {known[n][3] for n in wanted} | {"val" if t == "occ3d" else "val-world" for t in truths}
        stores = build_data(work, args.image_size, args.scenes, w, tuple(need))
        val = {t: stores["val" if t == "occ3d" else "val-world"] for t in truths}
        for name in wanted:
            _, _, ov, store = known[name]
            for seed in seeds:
                row = run_one(name, seed, [*args.overrides, *ov], stores[store], val, args, version, work)
                rows.append({**row, "world": w})
                print(f"world {w} {name} seed {seed}: " + ", ".join(
                    f"mIoU {100 * (row[t]['miou'] or 0):.1f} ({t} truth)" for t in truths), flush=True)
        if args.fit_samples and w == worlds[0] and len(truths) == 2:
            fits = run_fits(argparse.Namespace(**{**vars(args), "work": work}), val, version)
    desc = {v[0]: v[1] for v in VARIANTS}
    tables = {truth: world_table(rows, truth, worlds) + "\n\nEvery variant, all worlds together:\n\n"
              + table(summarise(rows, truth, wanted), desc, len(seeds) * len(worlds))
              + "\n\nPer class, all worlds together (where the 2D variant loses to 3d):\n\n" + class_table(rows, truth)
              for truth in truths}
    if fits:
        tables = {truth: t + f"\n\n`renderocc fit` on held-out samples {args.fit_samples} of world {worlds[0]} "
                  f"({args.fit_iters} iterations, the same config and overrides):\n\n" + fit_table(fits, truth)
                  for truth, t in tables.items()}
    cmd = ("python benchmarks/label_efficiency.py " + " ".join(sys.argv[1:])).strip()
    head = (f"# Label efficiency on held-out synthetic scenes of {len(worlds)} worlds\n\n`{cmd}` at commit "
            f"`{version['commit'][:12]}`{' (uncommitted changes)' if version['dirty'] else ''}: worlds (generator "
            f"seeds) {worlds}; config `{args.config}`, {args.steps} steps per run, training seeds {seeds}, extra "
            f"overrides {args.overrides or 'none'}; per world: train synth {args.scenes} scenes × 10 keyframes "
            f"(seed w, LiDAR sweeps {SWEEPS}), held out: 1 scene × 10 keyframes (seed w + 1), stored "
            f"{args.image_size}; `renderocc eval --split all` (Occ3D metrics inside mask_camera on the store's "
            f"0.4 m grid). {os.cpu_count()} CPU cores, {time.time() - t0:.0f} s wall for this invocation. The "
            f"threshold is chosen on held-out training samples (3D IoU for 3d/mixed; 2d: IoU against their label "
            f"voxels when loss.label_voxels > 0, else 2D depth agreement). "
            f"mean ± std over seeds (and worlds where pooled); an ablation counts only when |Δ| exceeds 2 × the "
            f"larger std. Floaters: voxels above 2 m predicted occupied but free in the truth, inside mask_camera, "
            f"per sample. Targets: 2d / 3d ≥ 0.85 overall and ≥ 0.75 per world; 2d geometry IoU and floaters no "
            f"worse than 3d's.\n\n")
    titles = {"occ3d": "Against the Occ3D-style truth (LiDAR accumulated over the scene)",
              "world": "Against the solid-world truth"}
    md = head + "\n\n".join(f"## {titles[t]}\n\n{tables[t]}" for t in truths) + "\n"
    print("\n" + md)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "label_efficiency.md").write_text(md)
    (args.results / "label_efficiency.json").write_text(json.dumps(
        {"command": cmd, "code": version, "config": args.config, "steps": args.steps, "seeds": seeds,
         "worlds": worlds, "overrides": args.overrides, "image_size": args.image_size, "scenes": args.scenes,
         "work": str(args.work), "rows": rows, "fits": fits}, indent=1))
    print(f"\nwrote {args.results / 'label_efficiency.md'} and .json")


if __name__ == "__main__":
    main()
