"""Training on Lightning: paper recipes as YAML presets, checkpoints, resume, DDP, export.

Needs the ``train`` extra (``pip install 'alignnet[train]'``, i.e. Lightning) for the training itself; the
configs (:mod:`alignnet.train.config`: presets, YAML, overrides) need only the base install, so the names that
need Lightning are imported on first use (a missing extra is then one clear ``MissingExtraError``).
"""

import importlib

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

# name -> submodule; these import Lightning
_NEEDS_LIGHTNING = {
    **dict.fromkeys(("ClassifierModule", "LRSchedule", "bce_one_hot", "build_model"), "module"),
    **dict.fromkeys(("TrainResult", "build_datasets", "export_model", "find_resume_checkpoint", "train"), "runner"),
}

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


def __getattr__(name: str):
    if name in _NEEDS_LIGHTNING:
        module = importlib.import_module(f".{_NEEDS_LIGHTNING[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
