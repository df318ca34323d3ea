"""manifest.json: what a store holds and how it was made; checked against a JSON Schema.

The schema ships in the package (renderocc/schemas/store_manifest.schema.json; the same file
lives under schemas/ in the repository for readers of the contract).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from renderocc.errors import UserError
from renderocc.store import fsio
from renderocc.store.layout import FORMAT_NAME, LEGACY_JPEG_VERSIONS, MANIFEST, READABLE_VERSIONS, SCHEMA_VERSION

SCHEMA_FILE = "store_manifest.schema.json"


@lru_cache(maxsize=1)
def json_schema() -> dict:
    return json.loads(resources.files("renderocc").joinpath("schemas").joinpath(SCHEMA_FILE).read_text())


def schema_errors(manifest: dict) -> list[str]:
    """Human-readable JSON Schema violations (empty when valid)."""
    import jsonschema

    v = jsonschema.Draft202012Validator(json_schema())
    return [f"manifest{''.join(f'[{p!r}]' for p in e.absolute_path)}: {e.message}"
            for e in sorted(v.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]


def check_version(obj: dict, what: str, write: bool = False) -> None:
    """Refuse another format, or a version this code cannot read (`write`: other than the current).

    Older readable versions open read-only: prep never writes into them (a rerun would mix layouts).
    """
    if obj.get("format", FORMAT_NAME) != FORMAT_NAME:
        raise UserError(f"{what} is not a renderocc ray store (format {obj.get('format')!r})")
    v = obj.get("schema_version")
    ok = v == SCHEMA_VERSION if write else v in READABLE_VERSIONS
    if not ok or isinstance(v, bool):
        reads = f"writes version {SCHEMA_VERSION}" if write else \
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        raise UserError(f"{what} has store schema version {v}, this renderocc {reads}: "
                        "re-run prep into a new store")


def load(root: str) -> dict:
    """The manifest of a COMPLETE store (UserError if absent, of another version, or invalid)."""
    if not fsio.exists(root, MANIFEST):
        if not fsio.exists(root):
            raise UserError(f"not a complete ray store: nothing at {root} "
                            "(`renderocc prep nuscenes --dataroot DATA --out STORE` makes one)")
        raise UserError(f"not a complete ray store (no {MANIFEST}): {root} (an interrupted prep resumes when "
                        "run again with the same options; deleting the folder is safe)")
    try:
        m = fsio.read_json(root, MANIFEST)
    except ValueError as e:
        raise UserError(f"{fsio.fs_path(root, MANIFEST)[1]} is not valid JSON: {e}") from e
    check_version(m, fsio.fs_path(root, MANIFEST)[1])
    errs = schema_errors(m)
    if errs:
        raise UserError(f"invalid {MANIFEST} in {root}: {errs[0]}")
    if m["schema_version"] in LEGACY_JPEG_VERSIONS and m["image"]["codec"] == "jpeg":
        raise UserError(f"{root} stores its images in the schema-{m['schema_version']} jpeg layout "
                        "(variable-length bytes, not a Zarr v3 standard), which this renderocc no longer "
                        "reads: re-run prep into a new store (the default codec is now a registered "
                        "Zarr v3 JPEG codec)")
    return m


def checksum(root: str) -> str:
    """sha256 of manifest.json: the store's identity (a checkpoint records the store it was trained on)."""
    return fsio.sha256_file(root, MANIFEST)


def supervision(has_depth: bool, has_semantics: bool, has_occ_gt: bool, has_motion: bool) -> dict:
    """The supervision contract: which training modes this store can feed."""
    modes = (["2d"] if has_depth else []) + (["3d"] if has_occ_gt else [])
    if has_depth and has_occ_gt:
        modes.append("mixed")
    return {"modes": modes, "depth": has_depth, "semantics": has_semantics, "occ_gt": has_occ_gt,
            "motion_masks": has_motion}
