"""Label efficiency (issue 8): the same model, the same steps, five supervision settings, one
held-out synthetic scene.

    python benchmarks/label_efficiency.py [--work DIR] [--steps N] [--config demo] [--set k=v ...]

One run does everything: writes (or reuses, under --work) a synthetic train split
(2 scenes × 10 keyframes, seed 0) and a held-out scene (1 × 10, seed 1), preps both at the
demo's stored size, adds motion masks, then trains and evaluates (`renderocc eval --split all`
on the held-out store):

  2d              rendering losses only, auxiliary rays (±3 frames), motion masks
  3d              dense voxel CE (Occ3D GT inside mask_camera)
  mixed           rendering + dense voxel CE
  2d-no-aux       2d without auxiliary rays
  2d-no-motion    2d with auxiliary rays but without motion masks (dynamic labels kept)

and prints / writes a Markdown table (+ JSON) to benchmarks/results/label_efficiency.{md,json}.
Runs whose checkpoint already matches (same overrides and steps) are reused; --fresh retrains.
Trainings run one after another (the machine has 2 shared cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
VARIANTS = [
    ("2d", "2D rendering only (aux rays, motion masks)", ["supervision=2d"]),
    ("3d", "dense 3D voxel CE only", ["supervision=3d"]),
    ("mixed", "2D rendering + dense 3D voxel CE", ["supervision=mixed"]),
    ("2d-no-aux", "2D rendering, no auxiliary rays", ["supervision=2d", "data.aux_frames=0"]),
    ("2d-no-motion", "2D rendering, aux rays WITHOUT motion masks",
     ["supervision=2d", "data.use_motion_masks=false"]),
]


def renderocc(*args: str, log: Path | None = None) -> None:
    cmd = [str(BIN / "renderocc"), *args]
    print("$ " + " ".join(cmd), flush=True)
    if log is None:
        subprocess.run(cmd, check=True)
        return
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def build_data(work: Path, image_size: str) -> tuple[Path, Path]:
    """Synthetic train split + held-out scene → two stores with motion masks (reused if complete)."""
    stores = {}
    for name, scenes, seed in (("train", 2, 0), ("val", 1, 1)):
        synth, store = work / f"synth-{name}", work / f"store-{name}"
        done = store / ".label_efficiency_done"
        if done.exists() and done.read_text() == image_size:
            print(f"reusing {store}")
        else:
            shutil.rmtree(store, ignore_errors=True)
            renderocc("synth", "nuscenes", "--out", str(synth), "--scenes", str(scenes), "--samples-per-scene", "10",
                      "--seed", str(seed), "--overwrite")
            renderocc("prep", "nuscenes", "--dataroot", str(synth), "--version", "v1.0-mini", "--out", str(store),
                      "--image-size", image_size)
            renderocc("prep", "motion-masks", "--store", str(store), "--dataroot", str(synth), "--no-progress")
            done.write_text(image_size)
        stores[name] = store
    return stores["train"], stores["val"]


def run_variant(name: str, overrides: list[str], args, train_store: Path, val_store: Path) -> dict:
    run = args.work / "runs" / name
    spec = {"config": args.config, "overrides": overrides, "steps": args.steps}
    marker = run / "variant.json"
    ckpt = run / "last.pt"
    same = marker.exists() and {k: v for k, v in json.loads(marker.read_text()).items() if k in spec} == spec
    if args.fresh or not (same and ckpt.exists()):
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        sets = [a for o in overrides for a in ("--set", o)]
        t = time.time()
        renderocc("train", "--store", str(train_store), "--out", str(run), "--config", args.config,
                  "--max-steps", str(args.steps), *sets, log=run / "train.log")
        spec["train_wall_s"] = round(time.time() - t, 1)
        marker.write_text(json.dumps(spec))
    else:
        print(f"reusing {run}")
        spec = json.loads(marker.read_text())
    ev = run / "eval"
    if args.fresh or not (ev / "metrics.json").exists() or (ev / "metrics.json").stat().st_mtime < ckpt.stat().st_mtime:
        renderocc("eval", "--store", str(val_store), "--ckpt", str(ckpt), "--out", str(ev), "--split", "all",
                  "--quiet", "--device", "cpu", log=run / "eval.log")
    m = json.loads((ev / "metrics.json").read_text())
    import torch

    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    return {"variant": name, "overrides": overrides, "supervision": ck["supervision"], "steps": ck["step"],
            "threshold": ck["threshold"], "threshold_how": (ck.get("threshold_info") or {}).get("how"),
            "train_wall_s": spec.get("train_wall_s"), "miou": m.get("miou"), "geometry_iou": m.get("geometry_iou"),
            "miou_nomask": m.get("miou_nomask"), "geometry_iou_nomask": m.get("geometry_iou_nomask"),
            "depth_abs_rel": m.get("depth_abs_rel"), "sem2d_miou": m.get("sem2d_miou"),
            "occ_samples": m.get("occ_samples"), "iou_per_class": m.get("iou_per_class")}


def fmt(v, pct: bool = True) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def table(rows: list[dict], desc: dict[str, str]) -> str:
    lines = ["| variant | supervision | mIoU % | geom. IoU % | depth AbsRel | 2D sem mIoU % | τ | train s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['supervision']}: {desc[r['variant']]} | {fmt(r['miou'])} | "
                     f"{fmt(r['geometry_iou'])} | {fmt(r['depth_abs_rel'], False)} | {fmt(r['sem2d_miou'])} | "
                     f"{r['threshold']:.3g} | {r['train_wall_s'] if r['train_wall_s'] is not None else '–'} |")
    by = {r["variant"]: r for r in rows}
    if "2d" in by and "3d" in by and by["3d"]["miou"]:
        ratio = by["2d"]["miou"] / by["3d"]["miou"]
        g = by["2d"]["geometry_iou"] / by["3d"]["geometry_iou"] if by["3d"]["geometry_iou"] else float("nan")
        lines += ["", f"**2D-only mIoU / 3D-only mIoU = {ratio:.2f}** (goal ≥ 0.8; the paper claims parity); "
                      f"geometric IoU ratio {g:.2f}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="data + runs folder to (re)use (default: a fresh temp dir)")
    ap.add_argument("--config", default="demo")
    ap.add_argument("--steps", type=int, help="training steps of every run (default: the config's max_steps)")
    ap.add_argument("--image-size", default="108x192", help="stored HxW (the demo feeds the network 96x176)")
    ap.add_argument("--variants", default=",".join(v[0] for v in VARIANTS), help="comma-separated subset")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra key=value for every run")
    ap.add_argument("--fresh", action="store_true", help="retrain and re-evaluate even when results exist")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args()

    from renderocc.train.config import load_config

    cfg = load_config(args.config, args.overrides)
    args.steps = args.steps or cfg.train.max_steps
    args.work = args.work or Path(tempfile.mkdtemp(prefix="label_efficiency_"))
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_store, val_store = build_data(args.work, args.image_size)
    wanted = [v for v in args.variants.split(",") if v]
    known = {v[0]: v for v in VARIANTS}
    rows = []
    for name in wanted:
        if name not in known:
            raise SystemExit(f"unknown variant {name!r} (known: {', '.join(known)})")
        _, _, ov = known[name]
        load_config(args.config, [*args.overrides, *ov])  # fail early on a bad override
        rows.append(run_variant(name, [*args.overrides, *ov], args, train_store, val_store))
        print(f"{name}: mIoU {fmt(rows[-1]['miou'])} geom IoU {fmt(rows[-1]['geometry_iou'])}", flush=True)
    desc = {v[0]: v[1] for v in VARIANTS}
    md = table(rows, desc)
    cmd = "python benchmarks/label_efficiency.py " + " ".join(sys.argv[1:])
    head = (f"# Label efficiency on a held-out synthetic scene\n\n"
            f"`{cmd.strip()}` — config `{args.config}`, {args.steps} steps per run, "
            f"extra overrides {args.overrides or 'none'}; train: synth 2 scenes × 10 keyframes (seed 0), "
            f"eval: 1 held-out scene × 10 keyframes (seed 1), stored {args.image_size}, `renderocc eval --split all` "
            f"(Occ3D metrics inside mask_camera at the store's 0.4 m grid). {os.cpu_count()} CPU cores (shared), "
            f"this invocation {time.time() - t0:.0f} s wall (reused runs keep their own `train s`). τ = the "
            f"checkpoint's density threshold: 2D depth agreement on held-out training samples for `2d`, "
            f"3D IoU on held-out training samples for `3d`/`mixed`; never the evaluation scene.\n\n")
    print("\n" + md)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "label_efficiency.md").write_text(head + md + "\n")
    (args.results / "label_efficiency.json").write_text(json.dumps(
        {"command": cmd.strip(), "config": args.config, "steps": args.steps, "overrides": args.overrides,
         "image_size": args.image_size, "work": str(args.work), "rows": rows}, indent=2))
    print(f"\nwrote {args.results / 'label_efficiency.md'} and .json")


if __name__ == "__main__":
    main()
