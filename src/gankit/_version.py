"""The package's one version number (read by pyproject.toml, the CLI and every run's config.json)."""

__version__ = "0.2.0"
