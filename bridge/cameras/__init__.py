"""Scheduled camera checks: schedules, snapshots, change detection, confirmation, and their extension."""
