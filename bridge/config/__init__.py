"""Configuration: every settings model, rule models, the YAML loader and units. A leaf: imports no feature."""
