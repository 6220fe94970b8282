"""wfops: run ML experiments on rented GPU pods with Invoke tasks."""

__version__ = "0.1.0"
