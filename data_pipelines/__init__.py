"""Scheduled jobs: they only schedule and configure ``transitnet.*``."""
