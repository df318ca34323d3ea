"""`renderocc build-ext`: prebuild the renderer extension and say where it lives.

Useful before a training run (no compile stall at the first batch) and to see the build log
when `render_rays` warned that it fell back to the reference.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from renderocc.cuda import loader
from renderocc.errors import UserError
from renderocc.prep import jpeg_rows


@click.command("build-ext")
@click.option("--cuda", "check_cuda", is_flag=True,
              help="Also compile-check the CUDA sources with nvcc (no GPU needed).")
@click.option("--arch", default="sm_80", show_default=True, help="GPU architecture for --cuda.")
@click.option("--verbose", is_flag=True, help="Show the compiler commands and output.")
def build_ext(check_cuda: bool, arch: str, verbose: bool) -> None:
    """Build (or find cached) the renderer extension; print the .so path.

    \b
    Example:
      renderocc build-ext          # CPU kernel
      renderocc build-ext --cuda   # also compile-check the CUDA kernel with nvcc
    """
    spec = loader.build_spec()
    start = time.perf_counter()
    try:
        loader.load(verbose=verbose)
    except loader.ExtensionUnavailable as exc:
        raise UserError(f"building the renderer extension failed: {exc} (rerun with --verbose)") from exc
    kind = "CPU + CUDA" if spec["with_cuda"] else "CPU"
    click.echo(f"renderer extension ({kind}) ready in {time.perf_counter() - start:.1f} s: "
               f"{loader.library_path()}")
    helper = jpeg_rows.library_path()
    click.echo(f"prep JPEG helper: {helper}" if helper else
               f"prep JPEG helper unavailable ({jpeg_rows.why_unavailable()}): prep decodes with OpenCV")
    if not check_cuda:
        return
    with tempfile.TemporaryDirectory(prefix="renderocc-nvcc-") as tmp:
        try:
            result = loader.compile_check_cuda(Path(tmp), arch=arch)
        except loader.ExtensionUnavailable as exc:
            raise UserError(f"CUDA compile check impossible: {exc}") from exc
    for command, code, output in result["steps"]:
        click.echo(f"[{'ok' if code == 0 else 'FAILED'}] {command}")
        if output and (verbose or code != 0):
            click.echo(output)
    if not result["ok"]:
        raise UserError("the CUDA sources do not compile (see above)")
    click.echo(f"CUDA sources compile for {arch} ({result['seconds']:.1f} s); not run: no GPU needed")
