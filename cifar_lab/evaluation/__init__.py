"""Scoring checkpoints: collecting predictions, metrics per image set, tables and plots."""
