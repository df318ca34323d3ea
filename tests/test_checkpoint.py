"""Checkpoints cannot run code: a crafted pickle given to eval / predict / viz / train --resume is
refused with one line and its payload never runs; checkpoints hold only tensors and plain data."""

from __future__ import annotations

import pickle

import pytest
import torch
from click.testing import CliRunner

from renderocc.cli import main
from renderocc.train.checkpoint import plain_data_problem, save_checkpoint


class Payload:
    """Unpickling this calls open(marker, 'w'): the marker file exists iff the pickle ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(tmp_path, kind: str):
    marker = tmp_path / f"marker-{kind}"
    run = tmp_path / f"run-{kind}"
    run.mkdir()
    path = run / "last.pt"
    if kind == "torch-zip":   # a torch.save archive whose dict holds the payload beside real-looking keys
        torch.save({"config": {}, "model": {"w": torch.zeros(1)}, "threshold": Payload(str(marker))}, path)
    else:                     # a bare pickle stream
        path.write_bytes(pickle.dumps({"config": {}, "model": Payload(str(marker))}))
    return path, marker


@pytest.mark.parametrize("kind", ["torch-zip", "bare-pickle"])
@pytest.mark.parametrize("command", ["eval", "predict", "viz", "train-resume"])
def test_crafted_pickle_never_runs(small_store, tmp_path, kind, command):
    path, marker = _crafted(tmp_path, kind)
    out = str(tmp_path / "out")
    if command == "train-resume":
        args = ["train", "--store", small_store, "--out", str(path.parent), "--resume",
                "--set", "data.workers=0", "--set", "model.width=8"]
    else:
        args = [command, "--store", small_store, "--ckpt", str(path), "--out", out]
        args += ["--split", "all"] if command in ("eval", "predict") else []
    res = CliRunner().invoke(main, args)
    assert not marker.exists(), "the checkpoint's pickle ran code"
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and "last.pt" in lines[0], res.output


def test_checkpoint_holds_plain_data_only(tmp_path):
    assert plain_data_problem({"a": [1, 2.0, "x", None, (True,)], "t": {"w": torch.zeros(2)}}) is None
    assert "Payload" in plain_data_problem({"a": [1, Payload("x")]})
    with pytest.raises(RuntimeError, match="plain data"):
        save_checkpoint(tmp_path / "last.pt", {"threshold": Payload(str(tmp_path / "m"))})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("payload, message", [
    ({"config": [1, 2], "model": {}}, "`config` is a list, not a table"),
    ({"config": {}, "model": {"w": "x"}}, "`model` is not a table of tensors"),
    ({"model": {}}, "missing `config`"),
    ([1, 2, 3], "holds a list"),
])
def test_malformed_checkpoint_is_one_line(small_store, tmp_path, payload, message):
    path = tmp_path / "last.pt"
    torch.save(payload, path)
    res = CliRunner().invoke(main, ["predict", "--store", small_store, "--ckpt", str(path), "--out",
                                    str(tmp_path / "o"), "--split", "all"])
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1
