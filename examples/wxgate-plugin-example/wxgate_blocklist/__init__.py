"""An example third-party wxgate plugin: a step and a hook, found through entry points."""

__version__ = "1.0.0"
