"""Training on Lightning: paper recipes as YAML presets, checkpoints, resume, DDP, export.

Needs the ``train`` extra (``pip install 'alignnet[train]'``, i.e. Lightning).
"""

from .config import (
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainConfig,
    TrainerConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    load_preset,
    save_config,
)
from .module import ClassifierModule, LRSchedule, bce_one_hot, build_model
from .runner import TrainResult, build_datasets, export_model, find_resume_checkpoint, train

__all__ = [
    "ClassifierModule",
    "DataConfig",
    "LRSchedule",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TrainConfig",
    "TrainResult",
    "TrainerConfig",
    "apply_overrides",
    "bce_one_hot",
    "build_datasets",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "export_model",
    "find_resume_checkpoint",
    "list_presets",
    "load_config",
    "load_preset",
    "save_config",
    "train",
]
