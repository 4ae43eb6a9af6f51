"""ALOE Workbench. Importing any part of it installs the narrow filters of `aloe.quiet`."""

from aloe import quiet

quiet.install()
