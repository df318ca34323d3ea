"""Unlabelled camera frames: what UniOcc's depth-aware teacher–student (DTS) adds, on synthetic worlds.

    python benchmarks/semi_supervised.py [--work DIR] [--base-steps N] [--steps N] [--seeds 0,1,2]
                                         [--config demo] [--variants keyframes,depth,mean-teacher,dts]
                                         [--set k=v ...] [--finetune-set k=v ...]

One run does everything: writes (or reuses, under --work) a synthetic training split whose keyframes
carry lidarseg and whose camera sweeps (unlabelled frames between the keyframes) carry LiDAR depth only,
and a held-out scene with Occ3D-style truth; trains one starting checkpoint on the labelled keyframes
(2D rendering supervision); then fine-tunes every variant × seed from that same checkpoint for the same
number of steps, and scores each (its EMA weights, as `renderocc eval` does) on the held-out scene,
Occ3D protocol (mIoU inside mask_camera):

  keyframes      labelled keyframes only
  depth          + the sweeps' depth rays (no teacher)
  mean-teacher   + a teacher (the EMA) whose voxels become targets; it sees no injected depth
  dts            + the depth-aware teacher: the sweep's LiDAR depth injected into its lift

Validation during the teacher runs scores the teacher (EMA) and the student on held-out training
samples; their mIoU is reported side by side. Results: benchmarks/results/semi_supervised.{md,json}:
mean ± std over seeds; an effect counts only when |Δ mean| > 2 × the larger std. Every row records the
git commit and the config digest; runs are reused only when the package tree and the digest match.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from label_efficiency import code_version, config_digest, mean_std, renderocc

HERE = Path(__file__).resolve().parent
LIDAR_SWEEPS = 4   # the synthetic LiDAR's sweeps between keyframes (prep --sweeps: densifies the depth labels)
VARIANTS = [  # name, description, overrides
    ("keyframes", "labelled keyframes only", ["dts.enabled=false"]),
    ("depth", "+ sweeps, depth rays only", ["dts.enabled=true", "dts.pseudo_weight=0"]),
    ("mean-teacher", "+ Mean Teacher (teacher without injected depth)", ["dts.enabled=true",
                                                                          "dts.teacher_depth=false"]),
    ("dts", "+ DTS (depth-aware teacher)", ["dts.enabled=true", "dts.teacher_depth=true"]),
]
METRICS = ("miou", "geometry_iou", "depth_abs_rel", "sem2d_miou")


def build_data(work: Path, args) -> dict[str, Path]:
    """The training split (keyframes + camera sweeps) and the held-out scene, as stores (reused when
    the recipe matches)."""
    recipe = {"image_size": args.image_size, "scenes": args.scenes, "camera_sweeps": args.camera_sweeps,
              "world_seed": args.world_seed, "code": code_version()["code_tree"]}
    stores = {}
    jobs = [("train", args.scenes, args.world_seed, args.camera_sweeps), ("val", 1, args.world_seed + 1, 0)]
    for name, scenes, seed, cam_sweeps in jobs:
        synth, store = work / f"synth-{name}", work / f"store-{name}"
        done = store / ".semi_supervised_done"
        if done.exists() and json.loads(done.read_text()) == recipe:
            print(f"reusing {store}")
        else:
            shutil.rmtree(store, ignore_errors=True)
            renderocc("synth", "nuscenes", "--out", str(synth), "--scenes", str(scenes), "--samples-per-scene", "10",
                      "--seed", str(seed), "--camera-sweeps-per-sample", str(cam_sweeps), "--overwrite")
            renderocc("prep", "nuscenes", "--dataroot", str(synth), "--version", "v1.0-mini", "--out", str(store),
                      "--image-size", args.image_size, "--sweeps", str(LIDAR_SWEEPS),
                      "--camera-sweeps", str(cam_sweeps))
            renderocc("prep", "motion-masks", "--store", str(store), "--dataroot", str(synth), "--no-progress")
            done.write_text(json.dumps(recipe))
        stores[name] = store
    return stores


def train_run(run: Path, store: Path, overrides: list[str], args, version: dict, init_from: Path | None) -> dict:
    """Train (or reuse) one run; returns its run.json record."""
    spec = {"config": args.config, "overrides": overrides, "digest": config_digest(args.config, overrides),
            "store": store.name, "code_tree": version["code_tree"],
            "init_from": None if init_from is None else str(init_from)}
    marker, ckpt = run / "run.json", run / "last.pt"
    old = json.loads(marker.read_text()) if marker.exists() else {}
    if (not args.fresh and not version["dirty"] and ckpt.exists() and {k: old.get(k) for k in spec} == spec
            and not old.get("dirty", True)):
        print(f"reusing {run} (code {spec['code_tree'][:10]}, config {spec['digest']})")
        return old
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    t = time.time()
    renderocc("train", "--store", str(store), "--out", str(run), "--config", args.config, "--quiet",
              *[a for o in overrides for a in ("--set", o)],
              *(["--init-from", str(init_from)] if init_from else []), log=run / "train.log")
    rec = {**spec, "commit": version["commit"], "dirty": version["dirty"], "train_wall_s": round(time.time() - t, 1)}
    marker.write_text(json.dumps(rec))
    return rec


def validations(run: Path) -> list[dict]:
    """The run's validation records (teacher = the EMA's scores, student_* the student's)."""
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{"step": r["step"], **r["validation"]} for r in recs if "validation" in r]


def evaluate(run: Path, store: Path) -> dict:
    ev = run / "eval"
    if not (ev / "metrics.json").exists():
        renderocc("eval", "--store", str(store), "--ckpt", str(run / "last.pt"), "--out", str(ev), "--split", "all",
                  "--no-rayiou", "--quiet", "--device", "cpu", log=run / "eval.log")
    m = json.loads((ev / "metrics.json").read_text())
    floaters = (m.get("floaters_above_2m") or {}).get("per_sample_mask_camera")
    return {k: m.get(k) for k in METRICS} | {"floaters": floaters}


def table(rows: list[dict], names: list[str], desc: dict[str, str], seeds: int) -> str:
    def pm(v: tuple[float, float], pct: bool = True) -> str:
        m, s = v
        return "–" if m != m else (f"{100 * m:.2f} ± {100 * s:.2f}" if pct else f"{m:.3f} ± {s:.3f}")

    keys = (*METRICS, "floaters")
    summ = {n: {k: mean_std([r["eval"][k] for r in rows if r["variant"] == n]) for k in keys} for n in names}
    lines = [f"| variant ({seeds} seeds) | mIoU % | geometry IoU % | depth AbsRel | 2D sem mIoU % | floaters > 2 m "
             "| vs keyframes only (mIoU) | config digests |", "|---|---:|---:|---:|---:|---:|---|---|"]
    base = summ.get("keyframes")
    for n in names:
        s = summ[n]
        effect = ""
        if base and n != "keyframes":
            d = s["miou"][0] - base["miou"][0]
            noise = 2 * max(s["miou"][1], base["miou"][1])
            effect = f"{100 * d:+.2f} ({'exceeds' if abs(d) > noise else 'within'} 2 std)"
        digests = ", ".join(sorted({r["digest"] for r in rows if r["variant"] == n}))
        fl = s["floaters"]
        floaters = "–" if fl[0] != fl[0] else f"{fl[0]:.0f} ± {fl[1]:.0f}"
        lines.append(f"| {n}: {desc[n]} | {pm(s['miou'])} | {pm(s['geometry_iou'])} | {pm(s['depth_abs_rel'], False)} "
                     f"| {pm(s['sem2d_miou'])} | {floaters} | {effect} | {digests} |")
    if "dts" in summ and "mean-teacher" in summ:
        d = summ["dts"]["miou"][0] - summ["mean-teacher"]["miou"][0]
        lines += ["", f"DTS − Mean Teacher: {100 * d:+.2f} mIoU."]
    return "\n".join(lines)


def teacher_table(rows: list[dict], names: list[str]) -> str:
    """Teacher (EMA) against student at every validation of the teacher runs, mean ± std over seeds."""
    lines = ["| variant | step | teacher mIoU % | student mIoU % | teacher − student |", "|---|---:|---:|---:|---:|"]
    for n in names:
        runs = [r["validations"] for r in rows if r["variant"] == n and r["validations"]
                and "student_miou" in r["validations"][0]]
        if not runs:
            continue
        for k in range(min(len(v) for v in runs)):
            t = mean_std([v[k]["miou"] for v in runs])
            s = mean_std([v[k]["student_miou"] for v in runs])
            d = mean_std([v[k]["miou"] - v[k]["student_miou"] for v in runs])
            lines.append(f"| {n} | {runs[0][k]['step']} | {100 * t[0]:.2f} ± {100 * t[1]:.2f} | "
                         f"{100 * s[0]:.2f} ± {100 * s[1]:.2f} | {100 * d[0]:+.2f} ± {100 * d[1]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="data + runs folder to (re)use (default: a fresh temp dir)")
    ap.add_argument("--config", default="demo")
    ap.add_argument("--base-steps", type=int, default=300, help="steps of the starting checkpoint (keyframes only)")
    ap.add_argument("--base-ckpt", type=Path, help="start every variant from this checkpoint instead of training one "
                                                  "(its sha256 is recorded)")
    ap.add_argument("--steps", type=int, default=150, help="fine-tuning steps of every variant")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scenes", type=int, default=2, help="synthetic training scenes (10 keyframes each)")
    ap.add_argument("--camera-sweeps", type=int, default=2, help="unlabelled camera frames per keyframe interval")
    ap.add_argument("--world-seed", type=int, default=0, help="generator seed of the training world (held out: +1)")
    ap.add_argument("--image-size", default="192x108", help="stored WxH")
    ap.add_argument("--variants", default=",".join(v[0] for v in VARIANTS), help="comma-separated subset")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for every run")
    ap.add_argument("--finetune-set", action="append", default=["optim.warmup_steps=10", "train.val_every=50",
                                                                "train.val_samples=4"],
                    help="key=value for the fine-tuning runs only")
    ap.add_argument("--fresh", action="store_true", help="retrain and re-evaluate even when results exist")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args()

    from renderocc.config import load_config

    args.work = args.work or Path(tempfile.mkdtemp(prefix="semi_supervised_"))
    args.work.mkdir(parents=True, exist_ok=True)
    version = code_version()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    known = {v[0]: v for v in VARIANTS}
    names = [v for v in args.variants.split(",") if v]
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown variant {n!r} (known: {', '.join(known)})")
        load_config(args.config, [*args.overrides, *args.finetune_set, *known[n][2]])  # fail early
    t0 = time.time()
    stores = build_data(args.work, args)
    base_ov = [*args.overrides, "supervision='2d'", "seed=0", f"train.max_steps={args.base_steps}"]
    if args.base_ckpt:
        from renderocc.train.run_state import file_sha256

        base_ckpt = args.base_ckpt.resolve()
        base = {"digest": f"given checkpoint, sha256 {file_sha256(base_ckpt)[:12]}", "path": str(base_ckpt)}
    else:
        base = train_run(args.work / "runs" / "base", stores["train"], base_ov, args, version, None)
        base_ckpt = args.work / "runs" / "base" / "last.pt"
    rows = []
    for n in names:
        for seed in seeds:
            ov = [*args.overrides, "supervision='2d'", *args.finetune_set, *known[n][2], f"seed={seed}",
                  f"train.max_steps={args.steps}"]
            run = args.work / "runs" / f"{n}-s{seed}"
            rec = train_run(run, stores["train"], ov, args, version, base_ckpt)
            rows.append({"variant": n, "seed": seed, "digest": rec["digest"], "commit": rec["commit"],
                         "dirty": rec["dirty"], "train_wall_s": rec.get("train_wall_s"),
                         "eval": evaluate(run, stores["val"]), "validations": validations(run)})
            print(f"{n} seed {seed}: mIoU {100 * (rows[-1]['eval']['miou'] or 0):.2f}", flush=True)
    base_eval = evaluate(base_ckpt.parent, stores["val"])
    desc = {v[0]: v[1] for v in VARIANTS}
    cmd = ("python benchmarks/semi_supervised.py " + " ".join(sys.argv[1:])).strip()
    md = (f"# Unlabelled camera frames: keyframes only, + depth rays, + Mean Teacher, + DTS\n\n`{cmd}` at commit "
          f"`{version['commit'][:12]}`{' (uncommitted changes)' if version['dirty'] else ''}: config `{args.config}`; "
          f"train: synth {args.scenes} scenes × 10 keyframes (generator seed {args.world_seed}) with "
          f"{args.camera_sweeps} camera sweeps per keyframe interval (depth only) and LiDAR sweeps {LIDAR_SWEEPS}; "
          f"held out: 1 scene × 10 keyframes (generator seed {args.world_seed + 1}), stored {args.image_size}. "
          f"Starting checkpoint: {args.base_steps} steps of 2D rendering supervision on the keyframes (config "
          f"{base['digest']}; held-out mIoU {100 * (base_eval['miou'] or 0):.2f}); every variant fine-tunes from it "
          f"for {args.steps} steps with {args.finetune_set + args.overrides}. Scored: the EMA weights, "
          f"`renderocc eval --split all` (Occ3D mIoU inside mask_camera). {os.cpu_count()} CPU cores, "
          f"{time.time() - t0:.0f} s wall for this invocation. mean ± std over seeds {seeds}; an effect counts "
          f"only when |Δ| exceeds 2 × the larger std.\n\n" + table(rows, names, desc, len(seeds))
          + "\n\n## Teacher against student (validation on held-out training samples during the runs)\n\n"
          + teacher_table(rows, names) + "\n")
    print("\n" + md)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "semi_supervised.md").write_text(md)
    (args.results / "semi_supervised.json").write_text(json.dumps(
        {"command": cmd, "code": version, "config": args.config, "base": base, "base_eval": base_eval,
         "steps": args.steps, "seeds": seeds, "overrides": args.overrides, "finetune": args.finetune_set,
         "rows": rows}, indent=1))
    print(f"\nwrote {args.results / 'semi_supervised.md'} and .json")


if __name__ == "__main__":
    main()
