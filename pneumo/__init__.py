"""pneumo: pneumonia detection on chest X-rays, with the MLOps loop around it."""

__version__ = "0.1.0"
