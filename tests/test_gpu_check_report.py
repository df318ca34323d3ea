"""scripts/gpu_check_report.py: stage results, the GPU targets, stages that exit 0 without their output,
crashed and skipped CUDA tests, and targets whose stage did not run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRASH = '<error type="crash" message="crashed (pytest exit -11) while this test ran"/>'
NOT_RUN = ('<testcase classname="tests.test_render_ops" name="test_later">'
           '<error type="not-run" message="late"/></testcase>')
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_render_cuda" name="test_cuda_matches_cpu[a]"/>
<testcase classname="tests.test_render_cuda" name="test_cuda_gradcheck[b]"><skipped message="no CUDA"/></testcase>
<testcase classname="tests.test_render_ops" name="test_opcheck"><failure message="boom"/></testcase>
<testcase classname="tests.test_render_cuda" name="test_bad_input">CRASH</testcase>
NOT_RUN
</testsuite></testsuites>""".replace("CRASH", CRASH).replace("NOT_RUN", NOT_RUN)
ALL_STAGES = ("env", "wheels", "build", "cuda_tests", "render_bench_38400", "render_bench_384000", "weights",
              "train_step", "timm_weights", "train_timm_resnet50", "torchrun_nccl", "pipeline_train", "pipeline_eval",
              "pipeline_predict", "pipeline_viz")


def _bench(config_sps: float, fp32_sps: float | None = None, precision: str = "bf16", batch: int = 1) -> dict:
    run = {"peak_mb_max": 1.0, "finite": True, "rays_per_s": 1.0}
    results = {"config": {"steps_per_s": config_sps, **run}}
    if fp32_sps is not None:
        results["fp32"] = {"steps_per_s": fp32_sps, **run}
    return {"precision": precision, "batch_size": batch, "results": results, "breakdown_s_per_step": {}}


def _run_dir(path: Path, steps: int, max_steps: int, *, last_pt: bool = True, validations=()) -> None:
    path.mkdir()
    recs = [{"step": 1, "loss": 9.0}] + [{"step": s, "validation": {"miou": 0.1}} for s in validations]
    recs.append({"step": steps, "loss": 8.0, "steps_per_s": 5.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (path / "config.json").write_text(json.dumps({"train": {"max_steps": max_steps}}))
    if last_pt:
        (path / "last.pt").write_bytes(b"x")


def _work(tmp_path: Path, statuses: dict[str, str], *, render_total_s=0.001, ratio=60.0, step=None, timm=None,
          ddp_steps=20, ddp_last_pt=True, outputs=True, peak_mb=30.0) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "stages.tsv").write_text("".join(f"{n}\t{s}\t1.0\t{0 if s == 'PASS' else -1 if s == 'SKIP' else 1}\t\n"
                                             for n, s in statuses.items()))
    (work / "cuda_tests.xml").write_text(JUNIT)
    (work / "render_1.json").write_text(json.dumps({"kernel": {"total": render_total_s, "peak_mb": peak_mb},
                                                    "ratio": {"total": ratio}}))
    (work / "render_10.json").write_text(json.dumps({"kernel": {"total": render_total_s * 20},
                                                     "ratio": {"total": ratio}}))
    for name, fig in (("train_step.json", step), ("train_timm.json", timm)):
        if fig is not None:
            (work / name).write_text(json.dumps(fig))
    if ddp_steps is not None:
        _run_dir(work / "ddp", ddp_steps, 20, last_pt=ddp_last_pt)
    if outputs:
        _run_dir(work / "run", 30, 30, validations=(15, 30))
        (work / "eval").mkdir()
        (work / "eval" / "metrics.json").write_text(json.dumps({"miou": 0.1}))
        (work / "pred").mkdir()
        (work / "pred" / "predict.json").write_text(json.dumps({"samples": 8}))
        (work / "viz").mkdir()
        (work / "viz" / "0000_bev.png").write_bytes(b"png")
    return work


def _report(work: Path, device: str) -> tuple[int, dict, str]:
    out = work.parent / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check_report.py"), str(work), str(out), device],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(out.read_text()), proc.stdout


def test_gpu_targets_and_skipped_or_crashed_cuda_tests(tmp_path):
    statuses = dict.fromkeys(ALL_STAGES, "PASS") | {"timm_weights": "PASS"}
    work = _work(tmp_path, statuses, step=_bench(60.0, 40.0), timm=_bench(18.0, precision="bf16"))
    code, report, stdout = _report(work, "cuda")
    status = {s["name"]: s["status"] for s in report["stages"]}
    assert status["cuda_tests"] == "FAIL" and code == 1 and not report["ok"]
    assert {s for s, v in status.items() if v != "PASS"} == {"cuda_tests"}
    assert report["cuda_tests"]["skipped"] == ["test_render_cuda::test_cuda_gradcheck[b]"]
    assert report["cuda_tests"]["failed"] == ["test_render_ops::test_opcheck"]
    assert report["cuda_tests"]["crashed"][0].startswith("test_render_cuda::test_bad_input: crashed")
    assert report["cuda_tests"]["not_run"] == ["test_render_ops::test_later"]
    targets = report["targets"]
    assert {k: v["met"] for k, v in targets.items()} == {
        "fwd_bwd_38400_ms": True, "fwd_bwd_384000_ms": False, "speedup_vs_reference": True,
        "peak_memory_38400_mb": True, "occ3d_samples_per_s_bf16": True,
        "bf16_over_fp32": True, "timm_resnet50_samples_per_s": False, "torchrun_steps": True,
        "pipeline_stages_passed": True}
    assert targets["bf16_over_fp32"]["value"] == 1.5 and targets["pipeline_stages_passed"]["value"] == 4
    assert report["pipeline"]["train"]["validations"] == [15, 30] and report["pipeline"]["viz"]["pngs"]
    assert "NOT met" in stdout and "SOME STAGES FAILED" in stdout and "1 crashed or timed out, 1 not run" in stdout


def test_missing_stages_leave_their_targets_not_measured(tmp_path):
    statuses = {"env": "PASS", "render_bench_38400": "FAIL", "train_step": "SKIP", "torchrun_nccl": "SKIP"}
    work = _work(tmp_path, statuses, ddp_steps=None, outputs=False)
    (work / "render_1.json").unlink()
    (work / "render_10.json").unlink()
    code, report, stdout = _report(work, "cuda")
    targets = report["targets"]
    assert code == 1 and all(t["met"] is None for t in targets.values()), targets
    assert "render_bench_38400 FAIL" in targets["fwd_bwd_38400_ms"]["note"]
    assert "render_bench_384000 not run" in targets["fwd_bwd_384000_ms"]["note"]
    assert "train_timm_resnet50 not run" in targets["timm_resnet50_samples_per_s"]["note"]
    assert "pipeline_train not run" in targets["pipeline_stages_passed"]["note"]
    assert report["train_step"] is None and report["torchrun"] is None and report["pipeline"]["eval"] is None
    assert "not measured" in stdout


def test_a_stage_that_exits_0_without_its_output_fails(tmp_path):
    statuses = {"torchrun_nccl": "PASS", "train_step": "PASS", "pipeline_train": "PASS", "pipeline_eval": "PASS",
                "pipeline_predict": "PASS", "pipeline_viz": "FAIL"}
    work = _work(tmp_path, statuses, step=_bench(40.0, 35.0, precision="fp32"), ddp_last_pt=False)
    (work / "eval" / "metrics.json").unlink()
    code, report, _ = _report(work, "cuda")
    rows = {s["name"]: s for s in report["stages"]}
    assert rows["torchrun_nccl"]["status"] == "FAIL" and "no last.pt" in rows["torchrun_nccl"]["detail"]
    assert rows["pipeline_eval"]["status"] == "FAIL" and "metrics.json" in rows["pipeline_eval"]["detail"]
    assert rows["pipeline_train"]["status"] == rows["pipeline_predict"]["status"] == "PASS"
    targets = report["targets"]
    assert targets["torchrun_steps"]["met"] is False and targets["pipeline_stages_passed"]["met"] is False
    assert targets["pipeline_stages_passed"]["value"] == 2
    # a step measured in another precision is no bf16 figure
    assert targets["occ3d_samples_per_s_bf16"]["met"] is None and "fp32" in targets["occ3d_samples_per_s_bf16"]["note"]
    assert targets["bf16_over_fp32"]["met"] is None and code == 1


def test_a_short_run_fails_its_stage(tmp_path):
    work = _work(tmp_path, {"torchrun_nccl": "PASS"}, ddp_steps=12, outputs=False)
    _, report, _ = _report(work, "cuda")
    row = report["stages"][0]
    assert row["status"] == "FAIL" and row["detail"] == "trained 12 of 20 steps"
    assert report["targets"]["torchrun_steps"] == {"value": 12, "target": "== 20", "met": False}


def test_cpu_mode_skips_are_fine_and_targets_do_not_apply(tmp_path):
    statuses = dict.fromkeys(ALL_STAGES, "PASS") | {"timm_weights": "SKIP", "train_timm_resnet50": "SKIP"}
    work = _work(tmp_path, statuses, render_total_s=0.5, ratio=20.0, step=_bench(0.2, precision="fp32"))
    clean = JUNIT.replace('<failure message="boom"/>', "").replace(CRASH, "").replace(NOT_RUN, "")
    (work / "cuda_tests.xml").write_text(clean)
    code, report, stdout = _report(work, "cpu")
    assert code == 0 and report["ok"] and "note" in report["targets"], stdout
    assert report["train_step"]["results"]["config"]["steps_per_s"] == 0.2 and "all stages passed" in stdout


NCU_TEXT = """==PROF== Connected to process 2506
[2533] python3.12@127.0.0.1
  void renderocc::<unnamed>::lanes_backward_kernel<float, 3, 17, false, int>(RenderArgs<T1>) (9600, 1, 1)x(128, 1, 1), \
Context 1, Stream 7, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    Duration                         ms         0.61
    L2 Cache Throughput               %        41.20
    Registers Per Thread             register/thread             128
    Achieved Occupancy                        %        22.50
"""


def test_ncu_profile_is_summarised_per_kernel(tmp_path):
    statuses = dict.fromkeys(ALL_STAGES, "PASS") | {"ncu_render": "PASS"}
    work = _work(tmp_path, statuses, step=_bench(60.0, 40.0))
    (work / "ncu_render.txt").write_text(NCU_TEXT)
    _, report, stdout = _report(work, "cuda")
    assert report["ncu_render"] == [{"kernel": "lanes_backward_kernel<float, 3, 17, false, int>",
                                     "Duration": "0.61 ms", "L2 Cache Throughput": "41.20 %",
                                     "Registers Per Thread": "128 register/thread", "Achieved Occupancy": "22.50 %"}]
    assert "ncu lanes_backward_kernel<float, 3, 17, false, int>: Duration 0.61 ms" in stdout
