"""Dense 2D masks against lidarseg as the semantic source, on the synthetic airside apron.

    python benchmarks/masks.py [--work DIR] [--steps 100] [--fit-samples 4] [--collect-only]

One run does everything (each step is reused under --work when its recorded command and the
package's tree hash match, so numbers made by other code are never reused):
- data: `synth airside` train split (2 scenes x 8 keyframes, seed 0) and a held-out scene (1 x 6,
  seed 1), 400x225 images, 1 LiDAR sweep; `prep nuscenes` at 192x108, `prep masks` (the GT masks:
  a perfect segmenter), `prep motion-masks`;
- fit (no network) on held-out keyframes, 0.8 m grid, 100 iterations, every variant with the same
  4096 LiDAR depth rays per iteration: lidarseg (their lidarseg classes) | masks (the LiDAR rays
  take the mask's class at their pixel, + 4096 mask rays) | both (lidarseg classes + 4096 mask rays),
  and masks / both with `loss.mask_semantics = surface` (a mask ray's class at the voxel where it stops);
- network: the demo config for --steps on the train split, evaluated on the held-out scene:
  lidarseg | masks (same LiDAR depth rays, classes from 4096 mask rays per sample).

Results: benchmarks/results/masks_vs_lidarseg.{md,json}: every step's command, the commit and
package tree that ran it, and each config's digest. `--collect-only` runs nothing and tabulates
what --work holds (each step still reports the commit that made it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MASKS = ["data.rays=8192", "data.mask_ray_share=0.5"]  # 4096 LiDAR rays + 4096 mask rays
MASKS_ONLY = ("LiDAR depth + mask classes (at the LiDAR pixels and 4096 mask rays), no lidarseg",
              [*MASKS, "data.lidar_classes=masks"])
SURFACE = ["loss.mask_semantics=surface"]  # a mask ray names the voxel where it stops
FITS = [("lidarseg", "LiDAR depth + lidarseg classes", []),
        ("masks", *MASKS_ONLY),
        ("both", "LiDAR depth + lidarseg classes + mask classes", MASKS),
        ("masks-surface", MASKS_ONLY[0] + ", mask class at the ray's stop", [*MASKS_ONLY[1], *SURFACE]),
        ("both-surface", "lidarseg classes + mask classes at the ray's stop", [*MASKS, *SURFACE])]
RUNS = [("lidarseg", "LiDAR depth + lidarseg classes", []),
        ("masks", *MASKS_ONLY)]
FIT_GRID = ["grid.voxel_size=0.8"]


def git(*a: str) -> str:
    return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def code_tree() -> str:
    """Tree hash of the package: any code change invalidates a step, docs do not."""
    return git("rev-parse", "HEAD:renderocc")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "renderocc.cli", *args]


COLLECT_ONLY = False


def step(out: Path, args: list[str], done: str, by_code: bool = True) -> dict:
    """Run `renderocc ARGS` unless `out` holds `done` made by the same command (and, `by_code`, the
    same package tree); returns the step's record (args, commit, code_tree)."""
    marker = out.parent / f".{out.name}.step.json"
    spec = {"args": args, "code_tree": code_tree()} if by_code else {"args": args}
    old = json.loads(marker.read_text()) if marker.exists() else {}
    if (out / done).exists() and (COLLECT_ONLY or {k: old.get(k) for k in spec} == spec):
        print(f"reusing {out} (commit {old.get('commit', 'unknown')[:10]})")
        return old
    if COLLECT_ONLY:
        raise SystemExit(f"--collect-only: {out / done} missing")
    shutil.rmtree(out, ignore_errors=True)
    print("$ renderocc " + " ".join(args), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cli(*args), check=True, cwd=ROOT, env=env)
    spec.update(commit=git("rev-parse", "HEAD"), code_tree=code_tree())
    marker.write_text(json.dumps(spec))
    return {**spec, "ran": True}


def build_data(work: Path) -> dict[str, Path]:
    """The two stores; reused when made by the same commands (synth and prep are not what this
    benchmark measures, so a package change elsewhere does not redo them)."""
    stores = {}
    for split, scenes, samples, seed in (("train", 2, 8, 0), ("val", 1, 6, 1)):
        apron, store = work / f"apron-{split}", work / f"store-{split}"
        if COLLECT_ONLY:
            stores[split] = store
            continue
        step(apron, ["synth", "airside", "--out", str(apron), "--scenes", str(scenes), "--samples-per-scene",
                     str(samples), "--seed", str(seed), "--image-size", "400x225", "--sweeps-per-sample", "1",
                     "--workers", "1"], "classes.toml", by_code=False)
        marker = store.parent / f".{store.name}.step.json"
        spec = {"apron": str(apron), "image_size": "192x108"}
        if not (marker.exists() and json.loads(marker.read_text()) == spec):
            shutil.rmtree(store, ignore_errors=True)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            for args in (["prep", "nuscenes", "--dataroot", str(apron), "--out", str(store), "--image-size",
                          "192x108", "--workers", "1"],
                         ["prep", "masks", "--store", str(store), "--masks", str(apron / "masks")],
                         ["prep", "motion-masks", "--store", str(store), "--dataroot", str(apron)]):
                print("$ renderocc " + " ".join(args), flush=True)
                subprocess.run(cli(*args), check=True, cwd=ROOT, env=env)
            marker.write_text(json.dumps(spec))
        stores[split] = store
    return stores


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/masks-bench"))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--fit-samples", default="4")
    ap.add_argument("--collect-only", action="store_true", help="run nothing: tabulate what --work holds")
    ap.add_argument("--skip-network", action="store_true", help="fits only (the network runs are the slow part)")
    args = ap.parse_args()
    global COLLECT_ONLY
    COLLECT_ONLY = args.collect_only
    args.work.mkdir(parents=True, exist_ok=True)
    stores = build_data(args.work)
    res: dict = {"commit": git("rev-parse", "HEAD"), "code_tree": code_tree(),
                 "command": "python benchmarks/masks.py " + " ".join(sys.argv[1:]), "fits": {}, "runs": {}}
    for name, desc, ov in FITS:
        out = args.work / f"fit-{name}"
        rec = step(out, ["fit", "--store", str(stores["val"]), "--out", str(out), "--indices", args.fit_samples,
                         "--quiet", *sets([*FIT_GRID, *ov])], "metrics.json")
        m = json.loads((out / "metrics.json").read_text())
        res["fits"][name] = {"description": desc, "overrides": [*FIT_GRID, *ov],
                             "semantic_source": m["semantic_source"], "config_digest": m["config_digest"],
                             "git_commit": m["git_commit"], "command": "renderocc " + " ".join(rec["args"]),
                             **{k: m.get(k) for k in ("miou", "geometry_iou", "miou_nomask", "label_coverage",
                                                      "semantic_coverage", "semantic_coverage_per_class",
                                                      "iou_per_class", "samples", "iters", "wall_s")}}
    for name, desc, ov in [] if args.skip_network else RUNS:
        run, ev = args.work / f"run-{name}", args.work / f"eval-{name}"
        ov = [f"train.max_steps={args.steps}", *ov]
        rec = step(run, ["train", "--store", str(stores["train"]), "--out", str(run), "--config", "demo",
                         *sets(ov)], "last.pt")
        if rec.get("ran"):  # a new checkpoint: its old evaluation is stale
            (ev.parent / f".{ev.name}.step.json").unlink(missing_ok=True)
        step(ev, ["eval", "--store", str(stores["val"]), "--ckpt", str(run / "last.pt"), "--out", str(ev),
                  "--split", "all", "--no-rayiou", "--quiet"], "metrics.json")
        m = json.loads((ev / "metrics.json").read_text())
        cfg = json.loads((run / "config.json").read_text())  # Config.digest() of the run's resolved config
        digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
        res["runs"][name] = {"description": desc, "overrides": ov, "semantic_source": m.get("semantic_source"),
                             "config_digest": digest, "git_commit": rec.get("commit"),
                             "command": "renderocc " + " ".join(rec["args"]),
                             **{k: m.get(k) for k in ("miou", "geometry_iou", "miou_nomask", "sem2d_miou",
                                                      "depth_abs_rel", "iou_per_class")}}
    out = HERE / "results" / "masks_vs_lidarseg"
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# Dense 2D masks vs lidarseg as the semantic source (synthetic airside)", "",
             f"Made by `{res['command']}` at commit {res['commit']} (package tree {res['code_tree'][:10]}).", "",
             f"## fit (no network): held-out samples {args.fit_samples}, 0.8 m grid", "",
             "| semantic source | mIoU % | geometry IoU % | mIoU all voxels % | label coverage % | "
             "semantic coverage % | config |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, f in res["fits"].items():
        lines.append(f"| {name}: {f['description']} | {pct(f['miou'])} | {pct(f['geometry_iou'])} | "
                     f"{pct(f['miou_nomask'])} | {pct(f['label_coverage'])} | {pct(f['semantic_coverage'])} | "
                     f"{f['config_digest']} |")
    lines += ["", f"## network: demo config, {args.steps} steps, train split → held-out scene", ""]
    if not res["runs"]:
        lines += ["not run (--skip-network)"]
    lines += ["",
              "| semantic source | mIoU % | geometry IoU % | 2D semantic mIoU % | depth AbsRel | config |",
              "|---|---:|---:|---:|---:|---|"]
    for name, r in res["runs"].items():
        lines.append(f"| {name}: {r['description']} | {pct(r['miou'])} | {pct(r['geometry_iou'])} | "
                     f"{pct(r['sem2d_miou'])} | {r['depth_abs_rel']:.3f} | {r['config_digest']} |")
    names = list(next(iter(res["fits"].values()))["iou_per_class"])
    heads = [f"fit {n}" for n in res["fits"]] + [f"net {n}" for n in res["runs"]]
    lines += ["", "## per-class IoU % (inside mask_camera), and fit semantic coverage %", "",
              "| class | " + " | ".join(heads + [f"coverage {n}" for n in res["fits"]]) + " |",
              "|---|" + "---:|" * (len(heads) + len(res["fits"]))]
    for c in names[:-1]:  # the last is free
        vals = [res["fits"][n]["iou_per_class"].get(c) for n in res["fits"]]
        vals += [(res["runs"][n]["iou_per_class"] or {}).get(c) for n in res["runs"]]
        vals += [(res["fits"][n]["semantic_coverage_per_class"] or {}).get(c) for n in res["fits"]]
        lines.append(f"| {c} | " + " | ".join(pct(v) for v in vals) + " |")
    lines += ["", "## provenance (commit that ran each step, and its command)", ""]
    for kind in ("fits", "runs"):
        for name, r in res[kind].items():
            lines.append(f"- {kind[:-1]} {name}: commit {str(r.get('git_commit'))[:10]}: `{r['command']}`")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.md and {out}.json")


if __name__ == "__main__":
    main()
