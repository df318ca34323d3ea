"""The training loop, in one screen-ish: build → (resume) → loop → checkpoint + threshold.

Single process: `renderocc train ...`. DDP: `torchrun --nproc_per_node N -m renderocc.cli train ...`
(gloo on CPU, nccl on GPU; multi-node via torchrun's usual --nnodes/--rdzv arguments).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from renderocc.classes import NUM_SEMANTIC
from renderocc.config import Config, resolved, semantic_source, supervision_label
from renderocc.errors import UserError
from renderocc.geometry import Scoring
from renderocc.model import OccupancyNet, OccupancyOutput
from renderocc.model.encoder import load_pretrained
from renderocc.options import resolve_device
from renderocc.store import manifest as manifest_mod
from renderocc.store.reader import StoreReader
from renderocc.train import losses as L
from renderocc.train.checkpoint import load_checkpoint, save_checkpoint
from renderocc.train.dataset import EpochSampler, RayDataset, holdout_split
from renderocc.train.threshold import choose_threshold

LOG_FIELDS = ["step", "loss", *(t.name for t in L.TERMS), "lr", "grad_norm", "rays_per_s", "steps_per_s",
              "elapsed_s"]
PREFETCH_BATCHES = 4  # batches each loader worker prepares ahead
EMA_WARMUP_STEPS = 10  # the EMA decay ramps as (1 + step) / (EMA_WARMUP_STEPS + step): early weights fade fast


# -- setup ---------------------------------------------------------------------------------------
def setup_distributed(device_choice: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world, device) from torchrun's environment and `--device` (auto: CUDA when available;
    under torchrun each rank takes its LOCAL_RANK's GPU); initialises the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    choice = resolve_device(device_choice)
    if choice.startswith("cuda"):
        index = int(choice.split(":")[1]) if ":" in choice and world == 1 else local
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1, then cosine decay to 0.01 at `total`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p))


def class_weights(reader, cfg: Config, indices: list[int]) -> torch.Tensor | None:
    """`auto`: from the class frequencies of ≤ 32 evenly spaced training samples, in the semantic
    labels the run uses: key lidarseg labels, mask pixels, or both mixed at `data.mask_ray_share`.
    None without any semantic source."""
    spec = cfg.loss.class_weights
    n_cls = reader.vocabulary.num_semantic
    source = semantic_source(cfg, reader.has_semantics)
    if spec == "none" or source in ("none", None):
        return None
    if isinstance(spec, list):
        if len(spec) != n_cls:
            raise UserError(f"loss.class_weights: expected {n_cls} numbers (the store's classes), got {len(spec)}")
        return torch.tensor(spec, dtype=torch.float32)
    picked = indices[:: max(1, len(indices) // 32)][:32]
    counts = np.zeros(n_cls, np.int64)
    if source in ("lidarseg", "both"):
        for i in picked:
            lab = reader.labels(i)["label"]
            counts += np.bincount(lab[lab < n_cls], minlength=n_cls)
    if source == "lidarseg":
        return L.class_weights_from_counts(torch.from_numpy(counts))
    pixels = np.zeros(n_cls, np.int64)
    for i in picked:
        m = reader.semantic_mask(i)
        pixels += np.bincount(m[m < n_cls], minlength=n_cls)
    share = cfg.data.mask_ray_share if source == "both" else 1.0
    freq = (1 - share) * counts / max(counts.sum(), 1) + share * pixels / max(pixels.sum(), 1)
    return L.class_weights_from_counts(torch.from_numpy(freq).float())


def build_model(cfg: Config, pretrained: str | None = None, num_classes: int = NUM_SEMANTIC) -> OccupancyNet:
    """The network; `num_classes` = the store vocabulary's semantic classes."""
    model = OccupancyNet(cfg.model, cfg.grid.spec, num_classes)
    if pretrained:
        missing = load_pretrained(model.encoder, pretrained)
        print(f"pretrained: loaded {pretrained} ({len(missing)} encoder tensors left at init)")
    return model


def make_loader(ds: RayDataset, sampler: EpochSampler, cfg: Config, pin: bool) -> DataLoader:
    workers = cfg.data.workers
    return DataLoader(ds, batch_size=cfg.data.batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin, worker_init_fn=_worker_init,
                      prefetch_factor=PREFETCH_BATCHES if workers else None, persistent_workers=False)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one thread per worker: workers must not take the training's cores


# -- one step ------------------------------------------------------------------------------------
def scoring_text(scoring: Scoring) -> str:
    """How the model grid meets the store's label grid, for the run's first line ("" when the same)."""
    if scoring.mode == "pool":
        return f" (labels pooled {'×'.join(str(f) for f in scoring.factor)})"
    if scoring.mode == "interpolate":
        return f" (interpolated to the labels' {scoring.labels.text()})"
    return ""


def use_amp(cfg: Config, device: torch.device) -> bool:
    """fp16 autocast and the GradScaler go together: both on exactly when this is true."""
    return device.type == "cuda" and cfg.train.amp


def compute_loss(model, batch: dict, cfg: Config, cw: torch.Tensor | None, device: torch.device,
                 scoring: Scoring | None = None) -> tuple[torch.Tensor, dict[str, float], int]:
    """Forward, then the weighted sum of the active loss terms (losses.TERMS)."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp(cfg, device)):
        out = model(batch["images"], batch["intrinsics"], batch["cam2ego"])
    out = OccupancyOutput(*(t.float() for t in out))
    return L.total_loss(out, batch, cfg, None if cw is None else cw.to(device), scoring)


def train_step(model, opt, sched, scaler, batch: dict, cfg: Config, cw, device: torch.device,
               scoring: Scoring | None = None) -> tuple[torch.Tensor, dict[str, float], int, float]:
    """One optimiser step: loss, backward (scaled on GPU), clip, AdamW, LR schedule."""
    loss, parts, n_rays = compute_loss(model, batch, cfg, cw, device, scoring)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    params = model.module.parameters() if hasattr(model, "module") else model.parameters()
    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
    scaler.step(opt)
    scaler.update()
    sched.step()
    return loss, parts, n_rays, float(gnorm)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay at `step`: the configured one, ramped up over the first steps so the average
    does not hold on to the random initial weights."""
    return min(decay, (1 + step) / (EMA_WARMUP_STEPS + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


def make_optim(model: torch.nn.Module, cfg: Config, device: torch.device):
    """AdamW, warmup + cosine LambdaLR, and a GradScaler (active exactly when AMP is)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    total, warmup = cfg.train.max_steps, cfg.optim.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp(cfg, device))
    return opt, sched, scaler


# -- the run -------------------------------------------------------------------------------------
def train(store, out: str | Path, cfg: Config, *, resume: bool = False, pretrained: str | None = None,
          stop_step: int | None = None, quiet: bool = False, device: str = "auto") -> dict:
    """Train on `store` (a path/URL, or an open StoreReader), writing `out/last.pt`,
    metrics.jsonl/.csv and TensorBoard events.

    `stop_step` ends the run early without changing the LR schedule (tests use it to cut a
    run in two and resume). Returns a summary dict (rank 0 meaningful).
    """
    rank, world, device = setup_distributed(device)
    out = Path(out)
    if isinstance(store, str | Path):
        reader = StoreReader(str(store))
    else:
        reader = store
    cfg = resolved(cfg, reader.grid)
    scoring = cfg.grid.spec.coarsens(reader.grid)
    seed = cfg.seed
    seed_everything(seed)
    train_idx, held = holdout_split(reader, cfg.data.holdout)
    if not train_idx:
        raise UserError(f"{store}: no training samples left after the hold-out split")
    vocab = reader.vocabulary
    model = build_model(cfg, pretrained, vocab.num_semantic).to(device)
    ds = RayDataset(reader, cfg, train_idx, train=True, exclude=held, feature_stride=model.feature_stride)
    cw = class_weights(reader, cfg, train_idx)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt, sched, scaler = make_optim(model, cfg, device)
    total = cfg.train.max_steps
    step = 0
    store_id = manifest_mod.checksum(reader.root)
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        check_resume(ckpt, cfg, store_id, out / "last.pt")
        try:
            model.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            step = int(ckpt["step"])
            _set_rng(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"--resume: {out / 'last.pt'} lacks or has a bad training state "
                            f"({e.__class__.__name__}: {str(e)[:80]})") from None
    elif (out / "last.pt").exists():  # every rank checks: no rank may be left waiting
        raise UserError(f"{out} already holds a run (last.pt): use --resume or another --out")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    stop = min(total, stop_step if stop_step is not None else total)
    bs = cfg.data.batch_size
    sampler = EpochSampler(train_idx, bs, seed, rank, world, start_step=step)
    loader = make_loader(ds, sampler, cfg, pin=device.type == "cuda")
    log = Logger(out, step, enabled=rank == 0, resume=resume)
    say = print if rank == 0 and not quiet else (lambda *a, **k: None)
    say(f"train: {len(train_idx)} samples, held-out {len(held)} (threshold), world {world}, device {device}, "
        f"supervision {supervision_label(cfg)}, grid {cfg.grid.spec.text()}{scoring_text(scoring)}, "
        f"{cfg.data.rays} rays/sample{mask_ray_text(ds)}, aux ±{ds.aux} frames"
        + ("" if ds.aux or not cfg.data.aux_frames else " (store has no motion masks: aux rays off)"))
    say(f"loss terms: {', '.join(f'{t.name} {getattr(cfg.loss, t.name):g}' for t in L.active_terms(cfg))}"
        + (" (the store has no free beams: free_beams adds nothing)"
           if ds.want_free_beams and not ds.reader.has_free_beams else ""))
    loader_rate = None
    nb = cfg.train.loader_bench_batches
    if rank == 0 and nb > 0 and step < stop:
        loader_rate = loader_samples_per_s(ds, train_idx, cfg, seed, step, nb)
        say(f"loader alone: {loader_rate:.2f} samples/s ({cfg.data.workers} workers)")
    it = iter(loader)
    ddp_model.train()
    t_start, first_step = time.time(), step
    t_log, rays_acc, steps_acc = time.time(), 0, 0
    bar = tqdm(total=stop, initial=step, disable=rank != 0 or quiet, dynamic_ncols=True, desc="train")
    ema_decay = cfg.optim.ema_decay
    try:
        while step < stop:
            loss, parts, n_rays, gnorm = train_step(ddp_model, opt, sched, scaler, next(it), cfg, cw, device, scoring)
            step += 1
            update_ema(ema, model, ema_decay_at(step, ema_decay))
            rays_acc += n_rays
            steps_acc += 1
            loss_v = _mean_over_ranks(float(loss.detach()), world, device)
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == 1 or step == stop:
                dt = max(time.time() - t_log, 1e-9)
                rec = {"step": step, "loss": loss_v, **parts, "lr": sched.get_last_lr()[0],
                       "grad_norm": float(gnorm),
                       "rays_per_s": rays_acc * world / dt, "steps_per_s": steps_acc / dt,
                       "elapsed_s": time.time() - t_start}
                log.write(rec)
                bar.set_postfix(loss=f"{loss_v:.3f}", rays_s=f"{rec['rays_per_s']:.0f}")
                t_log, rays_acc, steps_acc = time.time(), 0, 0
            if step % cfg.train.ckpt_every == 0 or step == stop:
                thr = _threshold(ema, reader, held, train_idx, cfg, device, rank)
                if rank == 0:
                    state = _state(model, ema, opt, sched, scaler, cfg, step, thr, world, store_id,
                                   vocab.names, semantic_source(cfg, reader.has_semantics))
                    save_checkpoint(out / "last.pt", state)
                if world > 1:
                    dist.barrier()
    finally:   # a failure prints its one line below the bar, not on it
        bar.close()
    log.close()
    elapsed = time.time() - t_start
    summary = {"step": step, "elapsed_s": elapsed}
    if rank == 0 and not quiet and step > 0:
        ckpt = load_checkpoint(out / "last.pt")
        summary.update(threshold=ckpt["threshold"], threshold_info=ckpt["threshold_info"])
        say(f"threshold: density > {ckpt['threshold']:.3g} ({ckpt['threshold_info']['how']})")
        rate = (step - first_step) / elapsed if elapsed > 0 and step > first_step else float("nan")
        sps = rate * bs * world
        say(f"training: {rate:.3f} steps/s = {sps:.2f} samples/s over the run's {step - first_step} steps "
            f"({elapsed:.0f} s, checkpoints included)"
            + (f" | loader alone: {loader_rate:.2f} samples/s" if loader_rate else ""))
        if loader_rate and loader_rate < sps:
            say("warning: the loader is slower than training; raise data.workers")
        say(f"checkpoint: {out / 'last.pt'} (supervision {supervision_label(cfg)})")
    return summary


def _threshold(ema, reader, held, train_idx, cfg, device, rank) -> dict | None:
    if rank != 0:
        return None
    n = cfg.train.threshold_samples
    if held:
        return choose_threshold(ema, reader, held[:n], cfg, device, source="held-out training samples")
    return choose_threshold(ema, reader, train_idx[:n], cfg, device,
                            source="training samples (data.holdout = none: no held-out part)")


def mask_ray_text(ds: RayDataset) -> str:
    """The run line's semantic source: ` (semantics: both, 1024 of them from masks)`."""
    source = semantic_source(ds.cfg, ds.reader.has_semantics)
    if source is None:
        return ""
    return f" (semantics: {source}" + (f", {ds.mask_rays} of them from masks)" if ds.mask_rays else ")")


def _state(model, ema, opt, sched, scaler, cfg, step, thr, world, store_id: str, classes: list[str],
           source: str | None = None) -> dict:
    """Tensors and plain data only (checkpoint.py loads with weights_only=True). `semantic_source`
    (lidarseg | masks | both | none) is part of the supervision contract reports state."""
    return {"store": {"manifest_sha256": store_id}, "model": model.state_dict(), "ema": ema.state_dict(),
            "config": cfg.to_dict(), "semantic_source": source,
            "supervision": cfg.supervision, "threshold": thr["threshold"] if thr else None,
            "threshold_info": thr, "grid": cfg.grid.spec.to_record(), "classes": classes, "step": step,
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "rng": _get_rng(), "world_size": world}


# Keys a resumed run may change: they do not alter the numbers it computes.
RESUME_MAY_DIFFER = ("data.workers", "train.log_every", "train.loader_bench_batches", "render.backend")


def check_resume(ckpt: dict, cfg: Config, store_id: str, path: Path) -> None:
    """A resumed run continues the same run: the same store (manifest checksum) and the same config."""
    saved_store = (ckpt.get("store") or {}).get("manifest_sha256")
    if saved_store is None:
        raise UserError(f"--resume: {path} records no store identity (written by an older renderocc); "
                        "use a new --out")
    if saved_store != store_id:
        raise UserError(f"--resume: {path} was trained on another store (or the store changed since: "
                        f"manifest sha256 {str(saved_store)[:12]} vs {store_id[:12]}); use a new --out")
    saved = Config.from_dict(ckpt["config"], f"--resume {path}").to_dict()
    now = cfg.to_dict()
    diff = [k for k in _flat_keys(saved) | _flat_keys(now)
            if k not in RESUME_MAY_DIFFER and _get(saved, k) != _get(now, k)]
    if diff:
        shown = ", ".join(f"{k}: {_get(saved, k)!r} vs {_get(now, k)!r}" for k in sorted(diff)[:3])
        raise UserError(f"--resume: {path} was trained with another config ({shown}); pass the same "
                        "--config/--set, or use a new --out")


def _flat_keys(d: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        out |= _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _get_rng() -> dict:
    """RNG states as tensors and plain data (NumPy's key array becomes a tensor)."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(keys), gauss],
             "numpy": [name, torch.from_numpy(np_keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np_keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _mean_over_ranks(v: float, world: int, device: torch.device) -> float:
    if world == 1:
        return v
    t = torch.tensor([v], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / world


def loader_samples_per_s(ds: RayDataset, indices: list[int], cfg: Config, seed: int, step: int, n: int
                         ) -> float:
    """Samples/s of the DataLoader alone (first batch = worker start-up, not timed)."""
    loader = make_loader(ds, EpochSampler(indices, cfg.data.batch_size, seed, start_step=step), cfg, pin=False)
    it = iter(loader)
    next(it)
    t = time.time()
    for _ in range(n):
        next(it)
    rate = n * cfg.data.batch_size / max(time.time() - t, 1e-9)
    del it
    return rate


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
            w.writerows(recs)
        self.tb = SummaryWriter(str(out / "tb"), purge_step=step + 1 if resume else None)

    def write(self, rec: dict) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(rec) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore").writerow(rec)
        for k, v in rec.items():
            if k != "step":
                self.tb.add_scalar(f"train/{k}", v, rec["step"])

    def close(self) -> None:
        if self.enabled:
            self.tb.close()
