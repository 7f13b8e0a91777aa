"""wxgate's built-in plugins, installed as ``wxgate_plugins``.

They use only the public interface in :mod:`gateway` and are registered through the
same entry points a third-party package uses (see setup.cfg).
"""
