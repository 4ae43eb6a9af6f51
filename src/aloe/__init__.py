"""ALOE Workbench: train and measure LLMs that infer a user's unspoken preferences over a
conversation. `aloe.__version__` is the installed package's version (what `aloe --version`
prints), read from its metadata, so it is the version in `pyproject.toml` when installed.
Importing any part of it installs the narrow warning filters of `aloe.core.quiet`."""

from importlib import metadata

from aloe.core import quiet

try:
    __version__ = metadata.version("aloe")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

quiet.install()
