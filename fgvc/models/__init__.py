"""The model zoo: a factory, weight loading and the adaptation groups of each architecture."""

from fgvc.models.factory import create_model, data_config, is_known_arch
from fgvc.models.groups import GroupError, resolve_groups
from fgvc.models.weights import WeightsError, load_weights

__all__ = ["GroupError", "WeightsError", "create_model", "data_config", "is_known_arch",
           "load_weights", "resolve_groups"]
