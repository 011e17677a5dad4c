"""Hydra multiruns: their job folders, continuing a search, and the sweep report."""
