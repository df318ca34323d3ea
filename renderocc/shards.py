"""Which shard of a job array this process is: from flags, else from the scheduler's environment.

Prep and QA split their work into `num_shards` parts and run part `shard_index`. On a cluster
the scheduler already numbers the tasks, so when the flags are absent the numbers come from:

- Slurm job arrays: SLURM_ARRAY_TASK_ID, minus SLURM_ARRAY_TASK_MIN and divided by
  SLURM_ARRAY_TASK_STEP when set (so `--array=1-16` and `--array=0-30:2` both give 0..15), with
  SLURM_ARRAY_TASK_COUNT as the count;
- Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX, with the count given once, as
  RENDEROCC_NUM_SHARDS (the Job's `completions`) or the --num-shards flag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from renderocc.errors import UserError

NUM_SHARDS_ENV = "RENDEROCC_NUM_SHARDS"


@dataclass(frozen=True)
class Shard:
    """Part `index` of `count`, and where those numbers came from (for the log line)."""

    index: int
    count: int
    source: str

    def describe(self) -> str:
        return f"shard {self.index} of {self.count} ({self.source})"


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    """An integer environment variable, None when unset or empty; anything else is a UserError."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer") from None


def _from_env(env: Mapping[str, str]) -> tuple[int | None, int | None, str]:
    """(index, count, source) the scheduler's variables give; (None, None, '') without any."""
    task = _env_int(env, "SLURM_ARRAY_TASK_ID")
    if task is not None:
        first = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
        if step < 1 or (task - first) % step:
            raise UserError(f"SLURM_ARRAY_TASK_ID={task} is not on the array's grid "
                            f"(SLURM_ARRAY_TASK_MIN={first}, SLURM_ARRAY_TASK_STEP={step})")
        count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
        return (task - first) // step, count, "SLURM_ARRAY_TASK_ID"
    index = _env_int(env, "JOB_COMPLETION_INDEX")
    if index is not None:
        return index, _env_int(env, NUM_SHARDS_ENV), "JOB_COMPLETION_INDEX"
    return None, _env_int(env, NUM_SHARDS_ENV), ""


def _named(value: int, source: str, noun: str) -> str:
    """'--num-shards 2', 'shard index 5 (from JOB_COMPLETION_INDEX)', '4 (from ...)'."""
    if source.startswith("--"):
        return f"{source} {value}"
    text = f"{noun} {value}".strip()
    return f"{text} (from {source})" if source else text


def resolve_shard(shard_index: int | None, num_shards: int | None,
                  env: Mapping[str, str] | None = None) -> Shard:
    """The shard to run: the flags where given, else the scheduler's environment, else 0 of 1.

    A count from nowhere for an index from the environment, or an index outside [0, count),
    is a UserError naming where each number came from.
    """
    env = os.environ if env is None else env
    env_index, env_count, env_source = _from_env(env)
    if shard_index is not None:
        index, index_from = shard_index, "--shard-index"
    elif env_index is not None:
        index, index_from = env_index, env_source
    else:
        index, index_from = 0, ""
    if num_shards is not None:
        count, count_from = num_shards, "--num-shards"
    elif env_count is not None:
        count_from = "SLURM_ARRAY_TASK_COUNT" if env_source == "SLURM_ARRAY_TASK_ID" else NUM_SHARDS_ENV
        count = env_count
    elif index_from and index_from != "--shard-index":
        raise UserError(f"{index_from} is set but the number of shards is not: pass --num-shards N or set "
                        f"{NUM_SHARDS_ENV}=N (a Kubernetes Indexed Job's completions)")
    else:
        count, count_from = 1, ""
    if count < 1 or not 0 <= index < count:
        raise UserError(f"{_named(index, index_from, 'shard index')} must be in "
                        f"[0, {_named(count, count_from, '')})")
    sources = dict.fromkeys(s for s in (index_from, count_from) if s)
    return Shard(index, count, " and ".join(sources) if sources else "single job")
