"""Sweeps: config, planning, the per-candidate task and the Ray driver."""

from shadow.sweep.config import SweepConfig, config_from_dict, load_config
from shadow.sweep.prepare import prepare_sweep
from shadow.sweep.runner import Progress, SweepSummary, run_sweep

__all__ = [
    "Progress",
    "SweepConfig",
    "SweepSummary",
    "config_from_dict",
    "load_config",
    "prepare_sweep",
    "run_sweep",
]
