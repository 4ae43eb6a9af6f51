"""API keys: named in the parameter file, read from the environment when a command is about to
use them (never stored, never shown).
"""


from __future__ import annotations

import os

from aloe.core.config.base import ROLE_NAMES
from aloe.core.config.schema import Params
from aloe.core.errors import ParamsError

# --------------------------------------------------------------------------------------------
# API keys: named in the file, read from the environment when a command is about to use them
# --------------------------------------------------------------------------------------------
# The roles each numbered stage sends requests as (stage 5 also reaches the endpoint models of
# `evaluation.models`); stages 3, 4 and 6 send none.
STAGE_ROLES: dict[int, tuple[str, ...]] = {
    0: ROLE_NAMES, 1: ("generator",), 2: ("user", "inducer", "assistant", "judge"),
    5: ("user", "judge")}
EVALUATION_STAGE = 5


def missing_key_message(who: str, variable: str) -> str:
    """One line for a role (or model under test) whose API key variable is not set."""
    return (f"{who} needs the environment variable {variable} (its API key): it is not set; "
            f"export it (export {variable}=...), or point {who} at a server that needs no key")


def check_api_keys(params: Params, stages: list[int]) -> None:
    """Refuse (exit 2, one line) when a role that `stages` will use names an API key variable
    that is not set. Not part of the schema: a file is valid without its keys (`aloe run
    PARAMS --stages 3-4`, tests and the plan need none); commands call this right after
    loading, before the run folder exists, so a missing key never surfaces hours later."""
    needed: list[tuple[str, str | None]] = []
    for stage in stages:
        needed += [(f"roles.{name}", getattr(params.roles, name).api_key_env)
                   for name in STAGE_ROLES.get(stage, ())]
        if stage == EVALUATION_STAGE:
            needed += [(f"evaluation.models[{spec.name}]", spec.api_key_env)
                       for spec in params.evaluation.models if spec.base_url]
            if params.evaluation.judge_check and params.roles.second_judge:
                needed.append(("roles.second_judge", params.roles.second_judge.api_key_env))
    for who, variable in needed:
        if variable and not os.environ.get(variable):
            raise ParamsError(f"{params.source}: {missing_key_message(who, variable)}")
        flaw = key_flaw(os.environ.get(variable, "")) if variable else None
        if flaw:
            raise ParamsError(f"{params.source}: {who}: the key in {variable} {flaw}; an HTTP "
                              "header cannot carry it: set the variable again from the key as "
                              "issued")


def key_flaw(key: str) -> str | None:
    """What no API key holds (a pasted line break, a non-ASCII character), said without the
    key itself; None for a key that can be sent."""
    for position, char in enumerate(key, start=1):
        if char in "\r\n":
            return f"holds a line break (character {position})"
        if not (" " < char <= "~"):
            what = "a space" if char == " " else f"the character U+{ord(char):04X}"
            return f"holds {what} (character {position})"
    return None


