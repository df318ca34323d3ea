"""Processes and seeds: torchrun's environment → (rank, world, device); one seed for every RNG."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist

from renderocc.options import resolve_device


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


def mean_over_ranks(v: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of a scalar tensor over all ranks (itself in a single process)."""
    if world == 1:
        return v
    t = v.detach().to(torch.float64).reshape(1).clone()
    dist.all_reduce(t)
    return t[0] / world


def get_rng() -> dict:
    """RNG states as tensors and plain data (NumPy's key array becomes a tensor)."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(keys), gauss],
             "numpy": [name, torch.from_numpy(np_keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng(state: dict) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np_keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
