"""Evaluation records written as a table of scores, for tests of the metrics and measures."""

from __future__ import annotations


def records(model: str, table: dict[str, list[int | None]]) -> list[dict]:
    """{persona: [score at turn 1, turn 2, ...]} -> evaluation records."""
    return [{"model": model, "persona_id": persona, "turn": k, "user": "u", "reply": "r",
             "score": score, "raw_judgement": str(score)}
            for persona, scores in table.items() for k, score in enumerate(scores, start=1)]
