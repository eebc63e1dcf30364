"""Prefect flows: the recipes that chain tasks."""
