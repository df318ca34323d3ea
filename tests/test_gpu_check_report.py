"""scripts/gpu_check_report.py: stage results, the issue-15 targets, and a GPU run whose CUDA tests skip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_render_cuda" name="test_cuda_matches_cpu[a]"/>
<testcase classname="tests.test_render_cuda" name="test_cuda_gradcheck[b]"><skipped message="no CUDA"/></testcase>
<testcase classname="tests.test_render_ops" name="test_opcheck"><failure message="boom"/></testcase>
</testsuite></testsuites>"""


def _work(tmp_path: Path, *, render_total_s: float, ratio: float, samples_per_s: float) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "stages.tsv").write_text("env\tPASS\t1.0\t0\t\ncuda_tests\tPASS\t9.5\t0\t\n"
                                     "train_fp32\tSKIP\t0\t-1\tover budget\n")
    (work / "cuda_tests.xml").write_text(JUNIT)
    (work / "render_1.json").write_text(json.dumps({"kernel": {"total": render_total_s}, "ratio": {"total": ratio}}))
    (work / "train_amp.json").write_text(json.dumps({"samples_per_s": samples_per_s, "steps_per_s": samples_per_s,
                                                     "peak_mb_max": 1.0, "finite": True}))
    return work


def _report(work: Path, device: str) -> tuple[int, dict, str]:
    out = work.parent / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check_report.py"), str(work), str(out), device],
                          capture_output=True, text=True)
    return proc.returncode, json.loads(out.read_text()), proc.stdout


def test_targets_and_a_skipped_cuda_test_fails_on_the_gpu(tmp_path):
    code, report, stdout = _report(_work(tmp_path, render_total_s=0.004, ratio=60.0, samples_per_s=7.5), "cuda")
    status = {s["name"]: s["status"] for s in report["stages"]}
    assert status == {"env": "PASS", "cuda_tests": "FAIL", "train_fp32": "SKIP"} and code == 1 and not report["ok"]
    assert report["cuda_tests"]["skipped"] == ["test_render_cuda::test_cuda_gradcheck[b]"]
    assert report["cuda_tests"]["failed"] == ["test_render_ops::test_opcheck"]
    met = {k: v["met"] for k, v in report["targets"].items()}
    assert met == {"fwd_bwd_38400_ms": True, "speedup_vs_reference": True, "occ3d_samples_per_s_amp": False}
    assert "NOT met" in stdout and "SOME STAGES FAILED" in stdout


def test_cpu_mode_skips_are_fine_and_targets_do_not_apply(tmp_path):
    code, report, _ = _report(_work(tmp_path, render_total_s=0.5, ratio=20.0, samples_per_s=0.1), "cpu")
    assert code == 0 and report["ok"] and "note" in report["targets"]
