"""The pytest11 entry point, named `pyinit`: loads pyinit.pytest_plugin, so `pytest -p no:pyinit` turns it off.

The plugin itself is registered under its module's name, which is what
`-p pyinit.pytest_plugin` (a source tree that is not installed) and a
conftest's `pytest_plugins` use too. Were the entry point that same module
under another name, pytest would be handed one module under two names and
refuse it. So the entry point is this module, and pytest registers the
plugin through the line below, once, whichever way comes first; `-p
no:pyinit` blocks this module, `-p no:pyinit.pytest_plugin` the plugin.
"""

pytest_plugins = ["pyinit.pytest_plugin"]
