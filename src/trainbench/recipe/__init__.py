"""Recipe presets, scale tables, resolution and validation of a cell."""

from trainbench.recipe.resolve import resolve, validate

__all__ = ["resolve", "validate"]
