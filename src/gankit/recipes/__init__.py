"""Recipes by name. Adding a recipe = adding one module here that calls `register`."""

from __future__ import annotations

from ..errors import GankitError

RECIPES: dict[str, type] = {}


def register(cls):
    """Class decorator: make a Recipe subclass available by its `name`."""
    RECIPES[cls.name] = cls
    return cls


def get_recipe(name: str):
    if name not in RECIPES:
        raise GankitError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def config_classes() -> dict[str, type]:
    return {name: cls.Config for name, cls in RECIPES.items()}


from . import cdcgan, cyclegan, dcgan, pix2pix, robust, sngan, ssgan  # noqa: E402,F401  (each registers itself)
