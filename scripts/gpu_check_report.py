"""gpu_check.json from the work folder of scripts/gpu_check.sh: every stage's result, the figures
each stage wrote, and the GPU targets measured against them; prints a short summary.

    python scripts/gpu_check_report.py WORK_DIR OUT_JSON DEVICE

Exit status 0 when every stage passed (SKIPs and missed targets are reported, not failures).
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# GPU targets (on one H200; meaningful for DEVICE=cuda only).
TARGET_FWD_BWD_MS = 5.0      # 38,400 rays through 200x200x16x17 at step 0.2 m
TARGET_SPEEDUP = 50.0        # vs the materialised reference on the same GPU
TARGET_SAMPLES_PER_S = 8.0   # the occ3d step with AMP


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stages(work: Path) -> list[dict]:
    rows = []
    for line in (work / "stages.tsv").read_text().splitlines():
        name, status, secs, rc, detail = (line.split("\t") + [""] * 5)[:5]
        rows.append({"name": name, "status": status, "seconds": float(secs), "exit": int(rc), "detail": detail})
    return rows


def test_counts(xml_path: Path) -> dict | None:
    """Counts from the pytest junit XML, plus the names of skipped and failed tests."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        return None
    cases = root.iter("testcase")
    out = {"passed": 0, "failed": [], "skipped": []}
    for case in cases:
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out["failed"].append(name)
        elif case.find("skipped") is not None:
            out["skipped"].append(name)
        else:
            out["passed"] += 1
    return out


def targets(render: dict | None, train_amp: dict | None, device: str) -> dict:
    if device != "cuda":
        return {"note": "targets apply to the CUDA run only"}
    out: dict = {}
    if render:
        ms = render["kernel"]["total"] * 1e3
        out["fwd_bwd_38400_ms"] = {"value": ms, "target": f"<= {TARGET_FWD_BWD_MS}", "met": ms <= TARGET_FWD_BWD_MS}
        ratio = render["ratio"].get("total")
        out["speedup_vs_reference"] = {"value": ratio, "target": f">= {TARGET_SPEEDUP}",
                                       "met": ratio is not None and ratio >= TARGET_SPEEDUP}
    if train_amp:
        sps = train_amp["samples_per_s"]
        out["occ3d_samples_per_s_amp"] = {"value": sps, "target": f">= {TARGET_SAMPLES_PER_S}",
                                          "met": sps >= TARGET_SAMPLES_PER_S}
    return out


def main() -> int:
    work, out_json, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    rows = stages(work)
    figures = {
        "env": read_json(work / "env.json"),
        "build": read_json(work / "build.json"),
        "cuda_tests": test_counts(work / "cuda_tests.xml"),
        "render_1x": read_json(work / "render_1.json"),
        "render_10x": read_json(work / "render_10.json"),
        "train_amp": read_json(work / "train_amp.json"),
        "train_fp32": read_json(work / "train_fp32.json"),
    }
    tests = figures["cuda_tests"]
    if device == "cuda" and tests and tests["skipped"]:  # on a GPU no CUDA test may skip
        for row in rows:
            if row["name"] == "cuda_tests" and row["status"] == "PASS":
                row.update(status="FAIL", detail=f"{len(tests['skipped'])} test(s) skipped on the GPU")
    cuobjdump = work / "cuobjdump.txt"
    if cuobjdump.exists():
        figures["build"] = {**(figures["build"] or {}), "sm_90_elf": "sm_90" in cuobjdump.read_text()}
    result = {"device": device, "ok": all(r["status"] != "FAIL" for r in rows), "stages": rows,
              "targets": targets(figures["render_1x"], figures["train_amp"], device), **figures}
    tmp = out_json.with_name(f".{out_json.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out_json)

    print("== summary")
    for r in rows:
        print(f"  {r['status']:4}  {r['name']:24} {r['seconds']:7.1f} s  {r['detail']}")
    if tests:
        print(f"  tests: {tests['passed']} passed, {len(tests['failed'])} failed, {len(tests['skipped'])} skipped")
    for name, t in result["targets"].items():
        if isinstance(t, dict):
            print(f"  target {name}: {t['value']:.3f} (want {t['target']}) {'met' if t['met'] else 'NOT met'}")
    for key in ("train_amp", "train_fp32"):
        f = figures[key]
        if f:
            print(f"  {key}: {f['steps_per_s']:.3f} steps/s = {f['samples_per_s']:.2f} samples/s, "
                  f"peak {f['peak_mb_max']:.0f} MB, losses finite: {f['finite']}")
    print(f"gpu_check: {'all stages passed' if result['ok'] else 'SOME STAGES FAILED'} -> {out_json}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
