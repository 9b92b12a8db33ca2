"""On-disk layout: raw archive, positions Parquet dataset and fetch log (no torch here)."""
