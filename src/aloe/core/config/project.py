"""Where the project is (the folder holding params/ and notebooks/) and how a path in a
parameter file is read: relative to the project root, never to the working folder.
"""


from __future__ import annotations

import os
from pathlib import Path

from aloe.core.errors import BadInputError, shown


class ProjectNotFoundError(BadInputError):
    """No project root (a folder holding params/ and notebooks/) where one was looked for."""



# --------------------------------------------------------------------------------------------
# The project root and paths in parameter files
# --------------------------------------------------------------------------------------------
def is_project(folder: Path) -> bool:
    """A project root holds `params/` and `notebooks/`."""
    return (folder / "params").is_dir() and (folder / "notebooks").is_dir()


def find_project(start: str | os.PathLike[str]) -> Path | None:
    """The first project root at or above `start` (a folder, or a file's folder); None if none."""
    here = Path(start).expanduser().resolve()
    if not here.is_dir():
        here = here.parent
    return next((folder for folder in (here, *here.parents) if is_project(folder)), None)


def project_root(params_file: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding `params/` and `notebooks/`, where relative paths and `outputs/` go.

    $ALOE_ROOT wins; else the first one at or above the parameter file, when one is given;
    else the first one at or above the current folder. None of them: ProjectNotFoundError
    (never a silent run, or an `outputs/` made in some other folder).
    """
    if os.environ.get("ALOE_ROOT"):
        return Path(os.environ["ALOE_ROOT"]).expanduser().resolve()
    found = (find_project(params_file) if params_file else None) or find_project(Path.cwd())
    if found is None:
        raise ProjectNotFoundError(_no_project_message(params_file))
    return found


def _no_project_message(params_file: str | os.PathLike[str] | None) -> str:
    where = (f"{params_file} or " if params_file else "") + str(Path.cwd())
    message = (f"no ALOE project (a folder holding params/ and notebooks/) at or above {where}: "
               "run aloe from the repository's folder")
    package_project = find_project(Path(__file__).parent)  # an editable install's checkout
    if package_project is not None:
        message += f" (cd {package_project})"
    return message + ", give it a parameter file inside one, or set ALOE_ROOT to one"


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def missing_file(path: str) -> str | None:
    """Why a file a parameter names cannot be read (None: it exists): not found, or a path the
    system cannot even look up (a name too long), with the path cut short when it is long."""
    try:
        if resolve_path(path).exists():
            return None
        problem = "file not found"
    except OSError as error:
        problem = f"cannot be looked up ({error.strerror})"
    return f"{problem}: {path if len(path) <= 200 else shown(path)}"


def file_in_the_way(folder: Path) -> Path | None:
    """The first of `folder` and its parents that exists and is not a folder (None: none)."""
    for path in (folder, *folder.parents):
        if path.exists():
            return None if path.is_dir() else path
    return None


def resolve_path(path: str | os.PathLike[str], root: Path | None = None) -> Path:
    """A path from a parameter file: absolute as is, relative to the project root otherwise."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root or project_root()) / p


