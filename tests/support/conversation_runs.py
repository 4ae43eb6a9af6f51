"""Small stage-2 runs for tests: a few personas, short conversations, the tiny roles at small
sizes; hand-made conversation trees with known content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aloe.core.config import params_from_dict
from aloe.core.records import write_records
from tests.conftest import tiny_dict

# Our own test personas (not from any published pool).
PERSONAS = [
    ("He is a 41-year-old paramedic in Leeds who restores old motorbikes on weekends and "
     "coaches his daughter's football team.",
     "He is blunt and practical, impatient with small talk, but warm once he trusts someone."),
    ("She is a 27-year-old marine biology PhD student who keeps a saltwater aquarium and bakes "
     "sourdough every Sunday.",
     "She is curious and talkative, loves details and jokes, and gets excited easily."),
    ("He is a 68-year-old retired train driver who grows tomatoes, plays chess online and has "
     "four grandchildren.",
     "He is patient and gentle, a bit old-fashioned, and prefers short, polite exchanges."),
    ("She is a 35-year-old freelance translator in Lisbon who runs marathons and collects vinyl "
     "records.",
     "She is independent and reserved, dislikes being told what to do, and values honesty."),
]


# Small replies keep the real model's requests short on a shared 2-core CPU; the long timeout
# keeps a busy machine from turning slow answers into retries (which `transformers serve`
# would queue behind the abandoned requests).
SMALL_ROLES = {
    name: {"model": "local", "base_url": "local", "temperature": temperature,
           "max_tokens": max_tokens, "timeout": 900.0}
    for name, temperature, max_tokens in [("user", 0.8, 32), ("inducer", 0.0, 40),
                                          ("assistant", 0.7, 32), ("judge", 0.0, 4)]
}


def persona_records(n: int = len(PERSONAS)) -> list[dict[str, Any]]:
    return [{"id": f"persona-{i}", "profile_id": f"profile-{i}",
             "personality_id": f"personality-{i}", "profile": profile, "personality": trait}
            for i, (profile, trait) in enumerate(PERSONAS[:n])]


def small_dict(tmp_path: Path, n: int = 3, turns: int = 2, cache: Path | None = None,
               **conversations: Any) -> dict:
    """A tiny-profile dict with few, short conversations; `cache` may share one cache file
    between tests that ask the very same requests."""
    data = tiny_dict(tmp_path, conversations={"n_conversations": n, "turns": turns,
                                              **conversations},
                     roles={**tiny_dict(tmp_path)["roles"], **SMALL_ROLES})
    if cache is not None:
        data["run"]["cache_path"] = str(cache)
    return data


def with_personas(data: dict, n: int = len(PERSONAS)):
    params = params_from_dict(data, source="test")
    write_records(params.layout.personas, persona_records(n))
    return params


def hand_tree(conv: str, persona: dict, verdicts: list[str], continued: list[str]) -> dict:
    """A conversation tree with known content: turn k's messages say which turn they are."""
    turns = [{"turn": k, "user": f"{conv} user {k}", "inferred": {"profile": "none",
                                                                  "personality": "none",
                                                                  "parsed": True},
              "hinted": f"{conv} hinted {k}", "plain": f"{conv} plain {k}",
              "verdict": {"rule": "both_orders", "preferred": v, "votes": []},
              "continued_with": c}
             for k, (v, c) in enumerate(zip(verdicts, continued), start=1)]
    return {"id": conv, "index": int(conv[-1]), "persona": persona, "turns": turns,
            "models": {}}
