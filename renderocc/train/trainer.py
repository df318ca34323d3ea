"""The training run: prepare (model, data, optimiser; resume or init-from) → announce → loop
(steps, logs, validation, checkpoints) → summary. Each part is one function below; the step itself
is `step.train_step`, the saved state `run_state`, the logs `logger`.

Single process: `renderocc train ...`. DDP: `torchrun --nproc_per_node N -m renderocc.cli train ...`
(gloo on CPU, nccl on GPU; multi-node via torchrun's usual --nnodes/--rdzv arguments).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from renderocc.config import Config, resolved, semantic_source, supervision_label
from renderocc.errors import UserError
from renderocc.geometry import Scoring
from renderocc.model.build import build_model
from renderocc.store import manifest as manifest_mod
from renderocc.store.reader import StoreReader
from renderocc.train import losses as L
from renderocc.train.checkpoint import save_checkpoint
from renderocc.train.class_weights import class_weights
from renderocc.train.dataset import EpochSampler, RayDataset, holdout_split
from renderocc.train.distributed import mean_over_ranks, seed_everything, setup_distributed
from renderocc.train.dts import DEFAULT_THRESHOLD, Unlabelled, check_dts, paired_loss, unlabelled_data
from renderocc.train.loader import loader_samples_per_s, make_loader
from renderocc.train.logger import Logger
from renderocc.train.optim import Ema, ema_decay_at, make_optim
from renderocc.train.precision import precision_text
from renderocc.train.run_state import Parts, init_from, resume, training_state
from renderocc.train.step import StepResult, train_step
from renderocc.train.threshold import choose_threshold

# A validator scores a model on held-out sample indices with a threshold record (None: 0.5) and
# returns plain scalar scores; `renderocc.eval.validation` makes the one the train command uses.
Validator = Callable[[torch.nn.Module, list[int], dict | None], dict[str, float]]
LOWER_IS_BETTER = ("depth_abs_rel",)


@dataclass(frozen=True)
class TrainOptions:
    """How a run starts, beside its config: a fresh run, `resume` (the same run continued), or
    `init_from` (a new run from another run's weights); pretrained image-encoder weights; output."""

    resume: bool = False
    pretrained: str | None = None
    pretrained_prefix: str | None = None
    pretrained_partial: bool = False
    init_from: str | None = None
    init_weights: str = "auto"
    init_partial: bool = False
    stop_step: int | None = None  # ends the run early without changing the LR schedule (tests cut runs)
    quiet: bool = False
    device: str = "auto"


@dataclass
class Run:
    """Everything a run holds while it trains."""

    cfg: Config
    reader: StoreReader
    out: Path
    scoring: Scoring
    rank: int
    world: int
    device: torch.device
    train_idx: list[int]
    held: list[int]
    ds: RayDataset
    parts: Parts
    ema: Ema
    forward_model: torch.nn.Module  # what the step calls: DDP- and/or compile-wrapped
    cw: torch.Tensor | None
    store_id: str
    accumulation: int
    stop: int
    say: Callable[..., None]
    quiet: bool
    validator: Validator | None = None
    step: int = 0
    first_step: int = 0
    best: dict | None = None
    parent: dict | None = None
    resumed: bool = False
    threshold: dict | None = None
    elapsed: float = 0.0
    unlabelled: Unlabelled | None = None  # the camera sweeps of a `[dts]` run

    @property
    def teacher(self) -> torch.nn.Module | None:
        """The teacher of a `[dts]` run that has one: the EMA of the student."""
        return self.ema.module if self.unlabelled and self.cfg.dts.pseudo_weight > 0 else None

    @property
    def val_metric(self) -> str:
        m = self.cfg.train.val_metric
        return ("miou" if self.reader.has_occ_gt else "sem2d_miou") if m == "auto" else m


# -- prepare -------------------------------------------------------------------------------------
def accumulation_steps(cfg: Config, world: int) -> int:
    """Micro-batches per optimiser step that reach `optim.global_batch` (1 when it is 0)."""
    per_pass = cfg.data.batch_size * world
    g = cfg.optim.global_batch
    if g == 0:
        return 1
    if g % per_pass:
        raise UserError(f"optim.global_batch {g} is not a multiple of data.batch_size × processes "
                        f"({cfg.data.batch_size} × {world} = {per_pass})")
    return g // per_pass


def prepare(store, out: Path, cfg: Config, opts: TrainOptions, validator: Validator | None) -> Run:
    """Build the model, data and optimiser, then take back the saved state (`resume`) or another
    run's weights (`init_from`). Every rank runs it; only rank 0 writes."""
    if opts.resume and opts.init_from:
        raise UserError("--resume continues this run from its own last.pt; --init-from starts a new run: "
                        "use one of them")
    if opts.init_from and opts.pretrained:
        raise UserError("--init-from loads every weight of the network; --pretrained only the image "
                        "encoder's: use one of them")
    rank, world, device = setup_distributed(opts.device)
    reader = StoreReader(str(store)) if isinstance(store, str | Path) else store
    cfg = resolved(cfg, reader.grid)
    scoring = cfg.grid.spec.coarsens(reader.grid)
    accumulation = accumulation_steps(cfg, world)
    seed_everything(cfg.seed)
    train_idx, held = holdout_split(reader, cfg.data.holdout)
    if not train_idx:
        raise UserError(f"{reader.root}: no training samples left after the hold-out split")
    if cfg.train.val_every and not held:
        raise UserError("train.val_every needs held-out samples, but data.holdout = none holds none out")
    if cfg.train.val_every and validator is None:
        raise UserError("train.val_every > 0: this caller gave the trainer no validator")
    say = print if rank == 0 and not opts.quiet else (lambda *a, **k: None)
    model = build_model(cfg, reader.vocabulary.num_semantic, opts.pretrained, prefix=opts.pretrained_prefix,
                        partial=opts.pretrained_partial, say=say,
                        skip_norm_check=bool(opts.resume or opts.init_from))  # their weights come from a run
    parent = None
    if opts.init_from:
        parent = init_from(model, opts.init_from, opts.init_weights, opts.init_partial, say)
    model = model.to(device)
    ds = RayDataset(reader, cfg, train_idx, train=True, exclude=held, feature_stride=model.feature_stride)
    ema = Ema(model)
    opt, sched, scaler = make_optim(model, cfg, device)
    parts = Parts(model, ema.module, opt, sched, scaler)
    store_id = manifest_mod.checksum(reader.root)
    step, best, thr = 0, None, None
    if opts.resume:
        ckpt = resume(parts, out / "last.pt", cfg, store_id)
        step, best, parent, thr = ckpt["step"], ckpt.get("best"), ckpt.get("parent"), ckpt.get("threshold_info")
    elif (out / "last.pt").exists():  # every rank checks: no rank may be left waiting
        raise UserError(f"{out} already holds a run (last.pt): use --resume or another --out")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    forward_model = model
    if world > 1:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        forward_model = torch.compile(forward_model)
    stop = min(cfg.train.max_steps, opts.stop_step if opts.stop_step is not None else cfg.train.max_steps)
    unlabelled = None
    if cfg.dts.enabled:
        check_dts(cfg, reader.num_sweeps, parent is not None, opts.resume)
        unlabelled = unlabelled_data(reader, cfg, train_idx, model.feature_stride)
    return Run(cfg=cfg, reader=reader, out=out, scoring=scoring, rank=rank, world=world, device=device,
               train_idx=train_idx, held=held, ds=ds, parts=parts, ema=ema, forward_model=forward_model,
               cw=class_weights(reader, cfg, train_idx), store_id=store_id, accumulation=accumulation,
               stop=stop, say=say, quiet=opts.quiet, validator=validator, step=step, first_step=step,
               best=best, parent=parent, resumed=opts.resume, threshold=thr, unlabelled=unlabelled)


# -- announce ------------------------------------------------------------------------------------
def scoring_text(scoring: Scoring) -> str:
    """How the model grid meets the store's label grid, for the run's first line ("" when the same)."""
    if scoring.mode == "pool":
        return f" (labels pooled {'×'.join(str(f) for f in scoring.factor)})"
    if scoring.mode == "interpolate":
        return f" (interpolated to the labels' {scoring.labels.text()})"
    return ""


def mask_ray_text(ds: RayDataset) -> str:
    """The run line's semantic source: ` (semantics: both, 1024 of them from masks)`."""
    source = semantic_source(ds.cfg, ds.reader.has_semantics)
    if source is None:
        return ""
    return f" (semantics: {source}" + (f", {ds.mask_rays} of them from masks)" if ds.mask_rays else ")")


def bev_text(cfg: Config) -> str:
    """The BEV augmentation a run draws, in words ("off" when none)."""
    d = cfg.data
    parts = (["flips in x and y"] if d.bev_flip else []) + ([f"rotation ±{d.bev_rotate:g}°"] if d.bev_rotate else []) \
        + ([f"scale {d.bev_scale[0]:g}–{d.bev_scale[1]:g}"] if tuple(d.bev_scale) != (1.0, 1.0) else [])
    return ", ".join(parts) or "off"


def announce(run: Run) -> None:
    """The run's first lines: data, supervision, grid, rays, batch, precision, loss terms, parent."""
    cfg, ds, say = run.cfg, run.ds, run.say
    say(f"train: {len(run.train_idx)} samples, held-out {len(run.held)} (threshold"
        + (", validation" if cfg.train.val_every else "") + f"), world {run.world}, device {run.device}, "
        f"supervision {supervision_label(cfg)}, grid {cfg.grid.spec.text()}{scoring_text(run.scoring)}, "
        f"{cfg.data.rays} rays/sample{mask_ray_text(ds)}, aux ±{ds.aux} frames"
        + ("" if ds.aux or not cfg.data.aux_frames else " (store has no motion masks: aux rays off)"))
    say(f"batch: {cfg.data.batch_size} × {run.world} process(es) × {run.accumulation} accumulated = "
        f"{cfg.data.batch_size * run.world * run.accumulation} samples per step, "
        f"precision {precision_text(cfg, run.device)}" + (", compiled" if cfg.train.compile else "")
        + f", BEV augmentation {bev_text(cfg)}")
    say(f"loss terms: {', '.join(f'{t.name} {getattr(cfg.loss, t.name):g}' for t in L.active_terms(cfg))}"
        + (" (the store has no free beams: free_beams adds nothing)"
           if ds.want_free_beams and not ds.reader.has_free_beams else ""))
    if run.unlabelled:
        say(unlabelled_text(run))
    if run.parent:
        p = run.parent
        say(f"init from: {p['path']} ({p['weights']} weights, step {p['step']}, sha256 {p['sha256'][:12]}, "
            f"config {p['config_digest']})")


def teacher_threshold(run: Run) -> float:
    """The teacher's occupancy threshold: the run's latest choice on its EMA, else the parent's."""
    for record in (run.threshold, run.parent):
        if record and record.get("threshold") is not None:
            return float(record["threshold"])
    return DEFAULT_THRESHOLD


def unlabelled_text(run: Run) -> str:
    """The run line of a `[dts]` run: what the camera sweeps add and who teaches."""
    u, d = run.unlabelled, run.cfg.dts
    line = (f"unlabelled: {len(u.indices)} camera sweeps of the training keyframes, {u.batch} per "
            f"{run.cfg.data.batch_size} labelled in each micro-batch, "
            + ("their depth rays" if d.depth_rays else "no depth rays"))
    if run.teacher is None:
        return line + " (no teacher: dts.pseudo_weight = 0)"
    origin = f"{run.parent['path']} (sha256 {run.parent['sha256'][:12]})" if run.parent else "this run's EMA"
    return (line + f" + the teacher's voxels (weight {d.pseudo_weight:g}, density ×/÷ {d.density_margin:g} of its "
            f"threshold {teacher_threshold(run):.3g}, class confidence {d.confidence:g}); teacher: "
            f"the EMA from {origin}, " + ("with the LiDAR depth in its lift (DTS)" if d.teacher_depth
                                           else "without LiDAR depth (Mean Teacher)"))


# -- loop ----------------------------------------------------------------------------------------
def loop(run: Run) -> None:
    """Optimiser steps until `stop`: log, validate and checkpoint on their cadences. A step that logs
    nothing reads nothing back from the device."""
    cfg = run.cfg
    sampler = EpochSampler(run.train_idx, cfg.data.batch_size, cfg.seed, run.rank, run.world,
                           start_step=run.step * run.accumulation)
    it = iter(make_loader(run.ds, sampler, cfg, pin=run.device.type == "cuda"))
    u, loss_fn, it_u = run.unlabelled, None, None
    if u is not None:  # its own sampler stream, at the same step: resume stays exact
        sampler_u = EpochSampler(u.indices, u.batch, u.cfg.seed, run.rank, run.world,
                                 start_step=run.step * run.accumulation)
        it_u = iter(make_loader(u.ds, sampler_u, u.cfg, pin=run.device.type == "cuda", batch_size=u.batch))
        loss_fn = paired_loss(run.teacher, cfg, u.cfg, run.cw, run.device, run.scoring,
                              lambda: teacher_threshold(run))
    log = Logger(run.out, run.step, enabled=run.rank == 0, resume=run.resumed)
    run.forward_model.train()
    t_start = t_log = time.time()
    rays_acc = steps_acc = 0
    bar = tqdm(total=run.stop, initial=run.step, disable=run.rank != 0 or run.quiet, dynamic_ncols=True,
               desc="train")
    try:
        while run.step < run.stop:
            batches = [next(it) if it_u is None else (next(it), next(it_u)) for _ in range(run.accumulation)]
            res = train_step(run.forward_model, run.parts.opt, run.parts.sched, run.parts.scaler, batches, cfg,
                             run.cw, run.device, run.scoring, loss_fn)
            run.step += 1
            run.ema.update(ema_decay_at(run.step, cfg.optim.ema_decay))
            rays_acc += res.rays
            steps_acc += 1
            bar.update(1)
            last = run.step == run.stop
            if run.step % cfg.train.log_every == 0 or run.step == 1 or last:
                dt = max(time.time() - t_log, 1e-9)
                rec = log_record(run, res, rays_acc * run.world / dt, steps_acc / dt, time.time() - t_start)
                log.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", rays_s=f"{rec['rays_per_s']:.0f}")
                t_log, rays_acc, steps_acc = time.time(), 0, 0
            validate_now = cfg.train.val_every and (run.step % cfg.train.val_every == 0 or last)
            # the threshold follows the step alone (not where a run is cut): the teacher reads it, so
            # a run cut and resumed must choose it at the same steps as one that was never cut
            if validate_now or run.step % cfg.train.ckpt_every == 0 or run.step == cfg.train.max_steps:
                run.threshold = threshold(run)
            if validate_now:
                validate(run, log, bar)
            if run.step % cfg.train.ckpt_every == 0 or last:
                save(run, "last.pt")
    finally:   # a failure prints its one line below the bar, not on it
        bar.close()
        log.close()
    run.elapsed = time.time() - t_start


def log_record(run: Run, res: StepResult, rays_per_s: float, steps_per_s: float, elapsed: float) -> dict:
    """The step's training record; the one place a step's numbers come back to the host."""
    return {"step": run.step, "loss": float(mean_over_ranks(res.loss, run.world)),
            **{k: float(v) for k, v in res.parts.items()}, "lr": run.parts.sched.get_last_lr()[0],
            "grad_norm": float(res.grad_norm), "rays_per_s": rays_per_s, "steps_per_s": steps_per_s,
            "elapsed_s": elapsed}


def threshold(run: Run) -> dict | None:
    """The occupancy threshold of the EMA weights, chosen on held-out samples (rank 0)."""
    if run.rank != 0:
        return None
    n = run.cfg.train.threshold_samples
    if run.held:
        return choose_threshold(run.ema.module, run.reader, run.held[:n], run.cfg, run.device,
                                source="held-out training samples")
    return choose_threshold(run.ema.module, run.reader, run.train_idx[:n], run.cfg, run.device,
                            source="training samples (data.holdout = none: no held-out part)")


def validation_indices(run: Run) -> list[int]:
    """`train.val_samples` held-out samples, evenly spaced (the same ones every time)."""
    n, held = run.cfg.train.val_samples, run.held
    if len(held) <= n:
        return list(held)
    return [held[round(k * (len(held) - 1) / max(1, n - 1))] for k in range(n)]


def validate(run: Run, log: Logger, bar) -> None:
    """Score the EMA weights on the held-out samples; keep best.pt by `train.val_metric` (rank 0).
    A run with a teacher scores the student too (`student_*`, with its own threshold): the teacher
    is the EMA, and UniOcc reports it ahead of the student."""
    if run.rank == 0:
        scores = run.validator(run.ema.module, validation_indices(run), run.threshold)
        if run.teacher is not None:
            student = run.parts.model
            thr = choose_threshold(student, run.reader, run.held[:run.cfg.train.threshold_samples], run.cfg,
                                   run.device, source="held-out training samples")
            scores |= {f"student_{k}": v for k, v in run.validator(student, validation_indices(run), thr).items()}
            student.train()
        log.write_validation(run.step, scores)
        metric = run.val_metric
        value = scores.get(metric)
        if value is None:
            raise UserError(f"train.val_metric {metric!r}: validation gave no such score "
                            f"(it gave {', '.join(sorted(scores))})")
        better = run.best is None or (value < run.best["value"] if metric in LOWER_IS_BETTER
                                      else value > run.best["value"])
        if value == value and better:
            run.best = {"metric": metric, "value": float(value), "step": run.step}
            save(run, "best.pt")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if isinstance(v, float))
        best = f" | best {metric} {run.best['value']:.4g} at step {run.best['step']}" if run.best else ""
        if not run.quiet:
            bar.write(f"validation at step {run.step}: {shown}{best}")
    if run.world > 1:
        dist.barrier()


def save(run: Run, name: str) -> None:
    if run.rank == 0:
        state = training_state(run.parts, run.cfg, run.step, run.threshold, run.world, run.store_id,
                               run.reader.vocabulary.names, semantic_source(run.cfg, run.reader.has_semantics),
                               run.best, run.parent)
        save_checkpoint(run.out / name, state)
    if run.world > 1 and name == "last.pt":
        dist.barrier()


# -- summary -------------------------------------------------------------------------------------
def summarise(run: Run, loader_rate: float | None) -> dict:
    """The closing lines: threshold, whole-run speed, loader check, checkpoint paths."""
    elapsed = run.elapsed
    summary = {"step": run.step, "elapsed_s": elapsed, "best": run.best}
    if run.rank != 0 or run.quiet or run.step == 0:
        return summary
    thr = run.threshold
    if thr is not None:
        summary.update(threshold=thr["threshold"], threshold_info=thr)
        run.say(f"threshold: density > {thr['threshold']:.3g} ({thr['how']})")
    steps = run.step - run.first_step
    rate = steps / elapsed if elapsed > 0 and steps > 0 else float("nan")
    sps = rate * run.cfg.data.batch_size * run.world * run.accumulation
    run.say(f"training: {rate:.3f} steps/s = {sps:.2f} samples/s over the run's {steps} steps "
            f"({elapsed:.0f} s, checkpoints included)"
            + (f" | loader alone: {loader_rate:.2f} samples/s" if loader_rate else ""))
    if loader_rate and loader_rate < sps:
        run.say("warning: the loader is slower than training; raise data.workers")
    if run.best:
        run.say(f"best: {run.out / 'best.pt'} ({run.best['metric']} {run.best['value']:.4g} at step "
                f"{run.best['step']})")
    run.say(f"checkpoint: {run.out / 'last.pt'} (supervision {supervision_label(run.cfg)})")
    return summary


# -- the run -------------------------------------------------------------------------------------
def train(store, out: str | Path, cfg: Config, *, validator: Validator | None = None, **options) -> dict:
    """Train on `store` (a path/URL, or an open StoreReader), writing `out/last.pt` (and `best.pt`
    with validation), metrics.jsonl/.csv and TensorBoard events. `options` are TrainOptions' fields.
    Returns a summary dict (rank 0 meaningful)."""
    opts = TrainOptions(**options)
    run = prepare(store, Path(out), cfg, opts, validator)
    announce(run)
    loader_rate = None
    nb = run.cfg.train.loader_bench_batches
    if run.rank == 0 and nb > 0 and run.step < run.stop:
        loader_rate = loader_samples_per_s(run.ds, run.train_idx, run.cfg, run.cfg.seed, run.step, nb)
        run.say(f"loader alone: {loader_rate:.2f} samples/s ({run.cfg.data.workers} workers)")
    loop(run)
    return summarise(run, loader_rate)
