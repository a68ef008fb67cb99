"""AICore: one JSON config trains, evaluates, demos and exports vision models."""
__version__ = "0.1.0"
