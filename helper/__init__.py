"""Shared training infrastructure: options, loops, schedules, checkpoints, logging, teacher loading."""
