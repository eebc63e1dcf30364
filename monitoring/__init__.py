"""Drift monitoring: features of production inputs against the training reference (Evidently)."""
