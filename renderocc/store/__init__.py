"""The ray store: Zarr images + Parquet labels + a JSON manifest (see `layout` for the layout)."""
