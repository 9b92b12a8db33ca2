"""Static GTFS: reading, versioning, metric shapes, line keys, id drift and map matching."""
