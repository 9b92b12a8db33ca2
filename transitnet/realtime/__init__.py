"""GTFS-realtime: fetch, decode, validate and replay feeds (no torch here)."""
