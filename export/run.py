"""Export reads runs through train/runs.py, the one place that knows a run's layout."""

from edgecap.train.runs import RunError, TrainedRun, load_run

__all__ = ["RunError", "TrainedRun", "load_run"]
