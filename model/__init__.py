"""Networks and losses (torch only). Models are built by name through the registry."""

from model.registry import build_model, list_models, register_model  # noqa: F401
