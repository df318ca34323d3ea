"""The run's logs: metrics.jsonl (every record), metrics.csv (the training columns) and TensorBoard."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from renderocc.train import losses as L
from renderocc.train.dts import LOG_FIELDS as DTS_FIELDS

LOG_FIELDS = ["step", "loss", *(t.name for t in L.TERMS), *DTS_FIELDS, "lr", "grad_norm", "rays_per_s", "steps_per_s",
              "elapsed_s"]
VALIDATION_KEY = "validation"  # a metrics.jsonl record holding this key is a validation, not a training step


class Logger:
    """metrics.jsonl + metrics.csv + TensorBoard; on resume, drops records past the checkpoint."""

    def __init__(self, out: Path, step: int, enabled: bool, resume: bool):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.jsonl = out / "metrics.jsonl"
        self.csv = out / "metrics.csv"
        recs = []
        if resume and self.jsonl.exists():
            recs = [json.loads(x) for x in self.jsonl.read_text().splitlines() if x.strip()]
            recs = [r for r in recs if r["step"] <= step]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(r for r in recs if VALIDATION_KEY not in r)
        self.tb = SummaryWriter(str(out / "tb"), purge_step=step + 1 if resume else None)

    def write(self, rec: dict) -> None:
        """One training record (the LOG_FIELDS)."""
        if not self.enabled:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(rec) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore").writerow(rec)
        for k, v in rec.items():
            if k != "step":
                self.tb.add_scalar(f"train/{k}", v, rec["step"])

    def write_validation(self, step: int, scores: dict[str, float]) -> None:
        """One validation: its scalar scores, under `validation` in metrics.jsonl and val/ in TensorBoard."""
        if not self.enabled:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"step": step, VALIDATION_KEY: scores}) + "\n")
        for k, v in scores.items():
            if isinstance(v, int | float) and v == v:
                self.tb.add_scalar(f"val/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.tb.close()
