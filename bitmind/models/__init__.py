"""Detector architectures. Importing this package registers every built-in one."""
from bitmind.models import ensemble as _ensemble  # noqa: F401  (registers "ensemble")
from bitmind.models import npr as _npr  # noqa: F401  (registers "npr")
from bitmind.models.registry import available_models, build_model, config_defaults, config_type_problem, register_model

__all__ = ["available_models", "build_model", "config_defaults", "config_type_problem", "register_model"]
