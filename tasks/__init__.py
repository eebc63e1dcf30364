"""Prefect tasks: small typed steps of the flows, each callable on its own (``task.fn``)."""
