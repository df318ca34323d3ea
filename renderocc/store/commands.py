"""`renderocc store info|validate`: look inside a ray store."""

from __future__ import annotations

import click

from renderocc.errors import UserError
from renderocc.store import fsio, layout
from renderocc.store.layout import JPEG_CODEC_NAME
from renderocc.store.reader import StoreReader
from renderocc.store.validate import notes, validate


def _codec(image: dict) -> str:
    if image["codec"] == "jpeg":
        return f"jpeg (Zarr v3 codec {JPEG_CODEC_NAME}, quality {image.get('jpeg_quality')}, lossy)"
    return "raw (zstd, lossless)"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _sweeps(r: StoreReader) -> str:
    """The `camera sweeps` line: unlabelled camera frames between keyframes (schema 4)."""
    info = layout.camera_sweeps(r.manifest)
    if info is None:
        return "no" + (f" (schema v{r.manifest['schema_version']})" if r.manifest["schema_version"] < 4 else "")
    n, rays = info["count"], info["num_rays"]
    fr = layout.SWEEP_FRAMES
    rays_b = sum(s.get(fr.rays_bytes, 0) for s in r.manifest["shards"])
    return (f"{n} frames (up to {info['per_sample']} per keyframe interval, {n / max(len(r), 1):.2f}/sample; "
            f"depth only), {rays} rays ({rays / max(n, 1):.0f}/frame), {_mb(rays_b)} rays + "
            f"{_mb(fsio.du(r.root, fr.images))} images; motion masks {'yes' if info.get('motion_masks') else 'no'}")


@click.command("info")
@click.argument("store")
def store_info(store: str) -> None:
    """Print a summary of STORE (a folder or fsspec URL).

    \b
    Example:
      renderocc store info store/
    """
    r = StoreReader(store, allow_interrupted=True)
    m = r.manifest
    W, H = r.image_size
    sup = m["supervision"]
    rays_b = sum(s["rays_bytes"] for s in m["shards"])
    img_b = fsio.du(r.root, layout.IMAGES)
    occ_b = fsio.du(r.root, layout.OCC_GT)
    lines = [
        f"store        {r.root}",
        f"schema       {m['format']} v{m['schema_version']} "
        f"(renderocc {m['tool']['version']}, {m['created']})",
        f"source       {m['source']['dataset']} {m['source']['version']} at {m['source']['dataroot']}"
        f" (lidarseg: {'yes' if m['source']['lidarseg'] else 'no'})",
        f"samples      {len(r)} in {len(set(r.scene_names()))} scenes, {len(m['shards'])} shards",
        f"cameras      {', '.join(r.cameras)}",
        f"images       {W}x{H} (WxH) uint8 RGB, {_codec(m['image'])}, {_mb(img_b)} "
        f"({img_b / max(len(r), 1) / 1e3:.0f} kB/sample)",
        f"rays         {m['num_rays']} ({m['num_rays'] / max(len(r), 1):.0f}/sample), {_mb(rays_b)}",
        f"labels       depth; semantics: {'yes' if sup['semantics'] else 'absent (label = 255)'}; "
        f"sweeps {m['labels']['sweeps']}; min depth {m['labels']['min_depth']} m; occlusion filter: "
        f"{'on' if m['labels']['occlusion_filter'] else 'off'}",
        f"occ gt       {'yes' if r.has_occ_gt else 'no'}" + (f", {_mb(occ_b)}" if occ_b else ""),
        f"motion masks {'yes' if r.has_motion_masks else 'no'}",
        f"classes      {r.vocabulary.name}: {r.vocabulary.num_semantic} + {r.vocabulary.free_name}",
        "2d masks     " + (f"yes ({m['semantic_masks']['num_images']} images from {m['semantic_masks']['source']})"
                            if r.has_semantic_masks else "no"),
        "free beams   " + (f"{m['free_beams']['num_beams']} ({m['free_beams']['num_beams'] / max(len(r), 1):.0f}"
                           f"/sample; LiDAR beams without a return, elevation ≥ "
                           f"{m['free_beams']['min_elevation_deg']:g}°)" if r.has_free_beams else
                           "no" + (" (schema v1)" if m["schema_version"] == 1 else "")),
        "cam sweeps   " + _sweeps(r),
        f"supervision  {', '.join(sup['modes']) or 'none'}",
        f"grid         {r.grid.text()} over {list(r.grid.box)}",
        f"adjacent     ±{m['adjacent']} keyframes (same scene)",
    ]
    if r.in_progress:
        lines.append(f"unfinished   {r.in_progress}")
    click.echo("\n".join(lines))


@click.command("validate")
@click.argument("store")
@click.option("--no-data", is_flag=True, help="Skip re-hashing images and occupancy (faster).")
@click.option("--deep", is_flag=True, help="Also decode every image and read every ray column (slowest).")
def store_validate(store: str, no_data: bool, deep: bool) -> None:
    """Check STORE's manifest schema, checksums and cross-references.

    A store an interrupted `prep masks` or `prep motion-masks` left is named: which state it holds
    (a note when it is consistent), or why it is not (a problem, until the command is rerun).

    \b
    Example:
      renderocc store validate store/
    """
    problems = validate(store, data=not no_data or deep, deep=deep)
    if problems:
        for p in problems[:50]:
            click.echo(p, err=True)
        raise UserError(f"store invalid: {len(problems)} problem(s), first: {problems[0]}")
    click.echo(f"store valid: {store}")
    for note in notes(store):
        click.echo(f"note: {note}")
