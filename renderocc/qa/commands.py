"""`renderocc qa`: the label-coverage report of a ray store, with thresholds for pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import click

from renderocc.errors import UserError
from renderocc.eval.common import clean_json, open_store


def parse_thresholds(items: tuple[str, ...]) -> dict[str, float]:
    """`key=value` strings → {key: float}; malformed ones are a UserError."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise UserError(f"--fail-under expects key=number, got {item!r}") from None
    return out


@click.command("qa")
@click.option("--store", "store", required=True, help="Ray store path or URL.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory for qa.html and qa.json.")
@click.option("--fail-under", "fail_under", multiple=True, metavar="KEY=VALUE",
              help="Exit 1 when summary KEY is below VALUE (repeatable), e.g. "
                   "labelled_pixels_per_image=500. Keys: the `summary` of qa.json.")
@click.option("--dark-luma", default=30.0, show_default=True, help="Mean luma flagging a dark image.")
@click.option("--few-labels", default=100, show_default=True,
              help="Labelled pixels below which an image is flagged.")
@click.option("--no-coverage", is_flag=True, help="Skip the ray march over the voxel grid.")
@click.option("--ray-stride", default=1, show_default=True, type=click.IntRange(min=1),
              help="Use every n-th label ray in the coverage march (faster on big stores).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def qa(store: str, out: str, fail_under: tuple[str, ...], dark_luma: float, few_labels: int,
       no_coverage: bool, ray_stride: int, quiet: bool) -> None:
    """Label-coverage report of a ray store: OUT/qa.html (self-contained) and OUT/qa.json.

    \b
    Example:
      renderocc qa --store store --out qa --fail-under labelled_pixels_per_image=500
    """
    from renderocc.qa.html import render_html, thumbnails
    from renderocc.qa.report import (
        SUMMARY_KEYS,
        QAOptions,
        check_fail_under,
        collect,
        unavailable_reason,
    )

    thresholds = parse_thresholds(fail_under)
    for key in thresholds:  # before the (long) pass over the store
        if key not in SUMMARY_KEYS:
            raise UserError(f"unknown --fail-under key {key!r}; known: {', '.join(SUMMARY_KEYS)}")
    reader = open_store(store)
    report = collect(reader, QAOptions(dark_luma=dark_luma, few_labels=few_labels,
                                       coverage=not no_coverage, ray_stride=ray_stride),
                     progress=not quiet)
    missing = [k for k in thresholds if report["summary"][k] is None]
    failures = [f"{k} is not available: {unavailable_reason(k, report)}" for k in missing]
    failures += check_fail_under(report, {k: v for k, v in thresholds.items() if k not in missing})
    report["fail_under"] = {"thresholds": thresholds, "failures": failures}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qa.json").write_text(json.dumps(clean_json(report), indent=1))
    (out_dir / "qa.html").write_text(render_html(report, f"renderocc QA: {store}",
                                                 failures if thresholds else None,
                                                 thumbnails(reader, report)))
    s = report["summary"]
    click.echo(f"{s['samples']} samples, {s['images']} images: "
               f"{s['labelled_pixels_per_image']:.0f} labelled pixels/image, "
               f"{s['dark_images']} dark, {s['few_label_images']} with few labels")
    click.echo(f"wrote {out_dir / 'qa.html'} and {out_dir / 'qa.json'}")
    if failures:
        raise click.ClickException("; ".join(f"fail-under: {f}" for f in failures))
