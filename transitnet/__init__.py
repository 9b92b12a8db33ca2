"""transitnet: forecast where transit vehicles will be, from GTFS-realtime feeds."""

__version__ = "0.1.0"
