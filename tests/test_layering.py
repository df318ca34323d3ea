"""The package's floors: lower floors never import upper ones, and only the op façade reaches the extension.

Floors, bottom up: `geometry` (grid, rays, ray–grid rules; numpy and torch only) → `config`, `ops`,
`cuda`, `classes` and the other small modules → `store`, `prep`, `synth`, `model` → `train` →
`eval`, `fit`, `qa` → `cli`. Every import counts, the ones inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "renderocc"
UPPER = ("renderocc.train", "renderocc.eval", "renderocc.fit", "renderocc.qa", "renderocc.cli")
BELOW_TRAIN = ("geometry", "config.py", "ops.py", "cuda", "model", "store", "prep", "synth", "classes.py",
               "errors.py", "outputs.py", "seeding.py", "shards.py", "safe_load.py", "ext_cache.py")


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (absolute names), at any depth of its code."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def files_under(name: str) -> list[Path]:
    p = PACKAGE / name
    return sorted(p.rglob("*.py")) if p.is_dir() else [p]


def test_the_floors_are_where_this_test_looks():
    assert all((PACKAGE / name).exists() for name in BELOW_TRAIN)
    assert len(files_under("geometry")) >= 4


def test_no_module_below_train_imports_an_upper_floor():
    bad = [f"{f.relative_to(PACKAGE)} imports {m}" for name in BELOW_TRAIN for f in files_under(name)
           for m in imports_of(f) if m.startswith(UPPER)]
    assert not bad, bad


def test_geometry_needs_only_numpy_torch_and_itself():
    for f in files_under("geometry"):
        for m in imports_of(f):
            top = m.split(".")[0]
            if top == "renderocc":
                assert m.startswith("renderocc.geometry"), f"{f.name} imports {m}"
            else:
                assert top in {"numpy", "torch", "__future__", "math", "os", "functools", "dataclasses",
                               "collections", "concurrent", "typing"}, f"{f.name} imports {m}"


def test_only_the_op_facade_reaches_the_extension():
    """`cuda.loader` (the built library) is imported by `renderocc.ops`, and by the `build-ext`
    command that builds it; every other module calls the ops through the façade."""
    allowed = {PACKAGE / "ops.py", PACKAGE / "cuda" / "commands.py"}
    users = {f for f in PACKAGE.rglob("*.py") if any(m.startswith("renderocc.cuda.loader") for m in imports_of(f))}
    assert users <= allowed, sorted(str(u.relative_to(PACKAGE)) for u in users - allowed)
    assert PACKAGE / "ops.py" in users


def test_this_scan_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from renderocc.train import trainer\n")
    assert "renderocc.train.trainer" in imports_of(f)


def test_the_trainer_reaches_eval_only_through_the_train_command():
    """Training sits below eval; the `train` command (CLI glue) hands the trainer eval's validator."""
    glue = PACKAGE / "train" / "commands.py"
    bad = [f"{f.relative_to(PACKAGE)} imports {m}" for f in files_under("train") if f != glue
           for m in imports_of(f) if m.startswith(("renderocc.eval", "renderocc.fit", "renderocc.qa"))]
    assert not bad, bad
