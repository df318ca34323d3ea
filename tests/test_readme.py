"""The README's shown outputs, re-run, so they cannot go stale.

A README code block shows commands as `$ COMMAND` lines, each followed by its output. The fast
tests re-run the deterministic ones (help, config, error lines) and compare them line by line, and
check the `make demo` block against `scripts/demo.sh`. The slow test rebuilds the demo's training
store at the demo's settings and compares what the README shows of synth, prep, store info, motion
masks, QA, train, eval, predict and fit: exactly where the output is deterministic, with times, rates
and (for a 1-step model) scores masked elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from renderocc.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO_SH = ROOT / "scripts" / "demo.sh"
DEMO = ".demo"  # the README's outputs are the demo's (`make demo`, DEMO_DIR=.demo)
REAL_DEFAULT = "../shared/data/nuscenes-scene-0916"  # demo.sh's default for stage 8


def blocks(path: Path = README) -> list[list[str]]:
    """The fenced code blocks of a Markdown file, as lists of lines."""
    out, cur = [], None
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if cur is None:
                cur = []
            else:
                out.append(cur)
                cur = None
        elif cur is not None:
            cur.append(line)
    return out


def shown(command: str, doc: Path = README) -> list[str]:
    """The output `doc` shows under `$ command`: the lines up to the next `$ ` line or the block's end."""
    found = []
    for block in blocks(doc):
        for i, line in enumerate(block):
            if line == f"$ {command}":
                rest = block[i + 1:]
                end = next((j for j, x in enumerate(rest) if x.startswith("$ ")), len(rest))
                found.append(rest[:end])
    assert len(found) == 1, f"{doc.name} shows `$ {command}` {len(found)} times (expected once)"
    return found[0]


def invoke(*args: str) -> list[str]:
    res = CliRunner().invoke(main, list(args))
    return res.output.rstrip("\n").splitlines()


# -- fast: deterministic outputs, re-run in process --------------------------------------------------
def test_command_list_is_the_clis():
    lines = invoke("--help")
    start = lines.index("Commands:")
    assert shown("renderocc --help | sed -n '/^Commands:/,$p'") == lines[start:]


def test_print_config_excerpt():
    lines = invoke("train", "--print-config", "--config", "demo", "--set", "data.rays=8192")
    keep = [x for x in lines if re.match(r"^(input_size|flip|rays) ", x)]
    assert shown("renderocc train --print-config --config demo --set data.rays=8192 | "
                 "grep -E '^(input_size|flip|rays) '") == keep


def test_error_lines(small_store, tmp_path, monkeypatch):
    """The README's error examples: one line each, word for word (the store is the test's synthetic
    one at the Occ3D label grid, named `store` as in the README)."""
    monkeypatch.chdir(tmp_path)
    os.symlink(small_store, "store")
    for cmd in ("renderocc train --store store --out run --set optim.lr=fast",
                'renderocc train --store store --out run --set "grid.voxel_size=[0.5, 0.5, 0.4]"',
                "renderocc fit --store store-val --out fit --samples 2,5,8"):
        args = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', cmd)][1:]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, (cmd, res.output)
        assert shown(cmd) == res.output.rstrip("\n").splitlines(), cmd
    assert not (tmp_path / "run").exists() and not (tmp_path / "fit").exists()


def test_guides_config_excerpt_and_error_lines(small_store, tmp_path, monkeypatch):
    """The guides' deterministic outputs: the training guide's config keys, the classes guide's refusal of
    mask rays on a store without masks (a copy of the test's store, named as in the guide)."""
    training, classes = ROOT / "docs" / "guides" / "training.md", ROOT / "docs" / "guides" / "your-classes.md"
    lines = invoke("train", "--print-config", "--config", "renderocc")
    keep = [x for x in lines if re.match(r"^(global_batch|precision|val_every) ", x)]
    assert shown("renderocc train --print-config --config renderocc | grep -E '^(global_batch|precision|val_every) '",
                 training) == keep
    monkeypatch.chdir(tmp_path)
    shutil.copytree(small_store, "stores/real")
    cmd = "renderocc train --store stores/real --out runs/x --set data.mask_ray_share=0.5"
    res = CliRunner().invoke(main, cmd.split()[1:])
    assert res.exit_code == 2
    out = res.output.replace(str(tmp_path.resolve()) + "/", "").rstrip("\n").splitlines()
    assert shown(cmd, classes) == out
    assert not (tmp_path / "runs" / "x" / "last.pt").exists()


def _demo_lines() -> tuple[list[str], list[str]]:
    """demo.sh's `say` lines (as regexes: its elapsed time is any number) and unconditional `echo` lines,
    with the demo's variables filled in; the quick-mode header is left out."""
    text = DEMO_SH.read_text()

    def fill(s: str) -> str:
        for k, v in {"$OUT": DEMO, "${STEPS:-300}": "300", "$REAL": REAL_DEFAULT}.items():
            s = s.replace(k, v)
        return s

    elapsed = "$(( $(date +%s) - t0 ))"
    says = [r"\d+".join(re.escape(fill(part)) for part in m.group(1).split(elapsed))
            for m in re.finditer(r'^\s*say "(.*)"\s*$', text, re.M) if "$STEPS" not in m.group(1)]
    echoes = [fill(m.group(1)) for m in re.finditer(r'^\s*echo "(.*)"\s*$', text, re.M)]
    return says, echoes


def test_demo_block_is_what_demo_sh_prints():
    """The `make demo` block: each `== ` line is one of demo.sh's, in order, and the artefact list ends it."""
    block = next(b for b in blocks() if any(x.startswith("== done in") for x in b))
    says, echoes = _demo_lines()
    headers = [x for x in block if x.startswith("== ")]
    pos = 0
    for h in headers:
        hit = next((i for i in range(pos, len(says)) if re.fullmatch(says[i], h[3:])), None)
        assert hit is not None, f"README line {h!r} is not printed by scripts/demo.sh (in this order)"
        pos = hit + 1
    assert headers[0].startswith("== renderocc demo in .demo:") and headers[-1].startswith("== done in")
    done = block.index(headers[-1])
    assert block[done + 1:] == echoes[:len(block) - done - 1] and len(block) - done - 1 >= 6


def test_demo_time_and_quick_mode_agree_with_demo_sh():
    text, readme = DEMO_SH.read_text(), README.read_text()
    minutes = re.search(r"about (\d+) min on 2 cores \(DEMO_STEPS=20 make demo: about (\d+) min\)", text)
    assert minutes, "demo.sh states its expected time"
    assert f"about {minutes.group(1)} minutes on a quiet 2-core machine" in readme
    assert "`DEMO_STEPS=20 make demo` is the quick mode" in readme and "${DEMO_STEPS:-}" in text


# -- slow: the demo's commands at the demo's settings ------------------------------------------------
TIME = [(r"\b\d+(\.\d+)? s\b", "<t> s"), (r"\d+(\.\d+)? (samples|steps|frames)/s", r"<r> \2/s"),
        (r"\d+\.\d+ s/sample", "<t> s/sample"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", "<date>")]


def mask(line: str, rules=TIME) -> str:
    for pattern, repl in rules:
        line = re.sub(pattern, repl, line)
    return line


def skeleton(line: str) -> str:
    """The line without its numbers: for the outputs of a 1-step model."""
    return re.sub(r"-?\d+(\.\d+)?", "#", mask(line))


def run_cli(root: Path, command: str, quiet: bool = True) -> list[str]:
    """`command` as the README writes it (`renderocc ...` with .demo paths), run under `root`; stdout and
    stderr in the order printed (progress bars off with --quiet; train's go to stderr, dropped)."""
    args = command.split()[1:] + (["--quiet"] if quiet else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, "-m", "renderocc.cli", *args], cwd=root, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT if quiet else subprocess.PIPE,
                         timeout=900)
    assert res.returncode == 0, (command, res.stdout, res.stderr)
    return [x.replace(str(root.resolve()) + "/", "") for x in res.stdout.rstrip("\n").splitlines()]


def same(command: str, actual: list[str], how=mask) -> None:
    """README lines = actual lines after `how`; a `...` line in the README skips actual lines."""
    want = shown(command)
    it = iter([how(x) for x in actual])
    for line in want:
        if line.strip() == "...":
            continue
        target = how(line)
        assert any(x == target for x in it), f"`{command}`: README line {line!r} not in the output:\n" + \
            "\n".join(actual)
    if not any(x.strip() == "..." for x in want):
        assert len(want) == len(actual), f"`{command}`: README shows {len(want)} lines, it prints {len(actual)}:\n" + \
            "\n".join(actual)


@pytest.mark.slow
def test_demo_outputs_match_a_rerun(tmp_path):
    """The demo's train store, rebuilt at its settings (synth 2 × 10 seed 0, 192x108): synth, prep,
    store info, motion masks and QA as the README shows them; a 1-step train's first lines exactly and
    the rest, eval, predict and a 5-iteration fit by their skeleton (the README's come from the demo's
    300 steps and fit's 100 iterations)."""
    root = tmp_path
    (root / DEMO).mkdir()
    d = DEMO
    cmds = [f"renderocc synth nuscenes --out {d}/synth-train --scenes 2 --samples-per-scene 10 --seed 0 --overwrite",
            f"renderocc prep nuscenes --dataroot {d}/synth-train --version v1.0-mini --out {d}/store-train "
            "--image-size 192x108",
            f"renderocc prep motion-masks --store {d}/store-train --dataroot {d}/synth-train",
            f"renderocc store info {d}/store-train",
            f"renderocc qa --store {d}/store-train --out {d}/qa-train"]
    for cmd in cmds:
        same(cmd, run_cli(root, cmd, quiet="store info" not in cmd))
    train = f"renderocc train --store {d}/store-train --out {d}/run --config demo"
    out = run_cli(root, train + " --max-steps 1", quiet=False)
    assert shown(train)[:3] == out[:3]  # data, batch, loss terms: the same for 1 step as for 300
    same(train, out, how=skeleton)
    for cmd in (f"renderocc eval --store {d}/store-val --ckpt {d}/run/last.pt --out {d}/eval --split all",
                f"renderocc predict --store {d}/store-val --ckpt {d}/run/last.pt --out {d}/pred"):
        same(cmd, run_cli(root, cmd.replace("store-val", "store-train")), how=skeleton)
    fit = f"renderocc fit --store {d}/store-val --out {d}/fit --samples 3"
    same(fit, run_cli(root, fit.replace("store-val", "store-train") + " --iters 5"), how=skeleton)


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_of_the_readme_and_guides_resolve():
    """Every relative link of the README, the guides and the research notes names a file that exists,
    and an anchor a heading of that file."""
    docs = [README, *sorted((ROOT / "docs" / "guides").glob("*.md")), ROOT / "docs" / "research-notes.md"]
    assert len(docs) >= 5
    for doc in docs:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            assert dest.exists(), f"{doc.relative_to(ROOT)}: link to {target} (no such file)"
            if anchor and dest.suffix == ".md":
                anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), re.M)}
                assert anchor in anchors, f"{doc.relative_to(ROOT)}: link to {target} (no such heading)"
