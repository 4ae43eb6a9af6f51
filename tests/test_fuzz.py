"""Seeded fuzzing of what a person or a backend hands the workbook (issue 27): parameter files,
run records, ratings files and chat-completion answers, each mutated thousands of times. Every
input must end in an accepted value or in the workbook's own one-line refusal, quickly: never a
traceback of another type, never a hang, never an answer the cache would keep that the client
could not use.

The generator is our own (no hypothesis: a fixed seed and fixed counts, so that a failure names
the case that reproduces it). Counts and seed are in docs/errors.md; a failing case prints its
index and input.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aloe.core.config import load_params
from aloe.core.errors import ParamsError
from aloe.llm.cache import answer_problem
from aloe.llm.client import MalformedAnswer, _completion
from tests.conftest import ROOT, tiny_dict

SEED = 27
COUNTS = {"parameter files": 600, "parameter texts": 600, "evaluation records": 800,
          "conversation files": 400, "side records": 600, "ratings files": 600,
          "backend answers": 3000}
HANG_S = 2.0  # far above any accepted or refused input here: a guard, not a speed target

ODD_VALUES: list[Any] = [None, True, False, 0, -1, 1, 2**63, -(2**63), 1e308, -1e-308,
                         float("nan"), float("inf"), "", " ", "x" * 5000, "\x00", "\u202e",
                         "../../etc", "1e5", [], [1, [2, [3]]], {}, {"a": {"b": None}},
                         "<script>alert(1)</script>", "null", "-5", 0.5]


def _odd(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(ODD_VALUES))


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside nested dicts and lists."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


def _mutate(value: Any, rng: random.Random, edits: int = 3) -> Any:
    """`value` with a few random edits: a value replaced, a key deleted or added, a list
    emptied or grown."""
    value = copy.deepcopy(value)
    for _ in range(edits):
        path = rng.choice(_paths(value)[1:] or [()])
        if not path:
            return _odd(rng)
        parent = value
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = rng.random()
        if action < 0.6:
            parent[last] = _odd(rng)
        elif action < 0.75 and isinstance(parent, dict):
            del parent[last]
        elif action < 0.9 and isinstance(parent, dict):
            parent[rng.choice(["extra", "bogus_key", "x" * 200, "1", ""])] = _odd(rng)
        elif isinstance(parent[last], list):
            parent[last] = parent[last] * rng.randint(0, 3)
        else:
            parent[last] = {"nested": parent[last]}
    return value


def _check(kind: str, cases: list[Any], attempt: Callable[[Any], Any],
           refusals: tuple[type[BaseException], ...]) -> dict[str, int]:
    """Run every case: accepted, or refused by one of `refusals` with a one-line message;
    anything else (or a slow case) fails the test naming the case."""
    tally = {"accepted": 0, "refused": 0}
    for index, case in enumerate(cases):
        started = time.perf_counter()
        try:
            attempt(case)
            tally["accepted"] += 1
        except refusals as error:
            message = str(error)
            assert message and "\n" not in message and len(message) < 2000, \
                f"{kind} #{index}: not one line: {message[:500]!r}"
            assert "Traceback" not in message, f"{kind} #{index}: {message[:300]}"
            tally["refused"] += 1
        except Exception as error:  # noqa: BLE001 - the failure this test exists to find
            pytest.fail(f"{kind} #{index} (seed {SEED}) raised {type(error).__name__}: "
                        f"{str(error)[:300]}\ninput: {repr(case)[:1500]}")
        seconds = time.perf_counter() - started
        assert seconds < HANG_S, f"{kind} #{index} took {seconds:.1f} s: {repr(case)[:500]}"
    return tally


# ------------------------------------------------------------------------------------------
# Parameter files
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mutated_parameter_files_load_or_are_refused_in_one_line(tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}/params")
    base = tiny_dict(tmp_path)
    path = tmp_path / "params.yaml"

    def load(data: Any) -> Any:
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        return load_params(path)

    cases = [_mutate(base, rng, edits=rng.randint(1, 4))
             for _ in range(COUNTS["parameter files"])]
    tally = _check("parameter file", cases, load, (ParamsError,))
    assert tally["accepted"] > 0 and tally["refused"] > COUNTS["parameter files"] // 2


def test_mutated_parameter_texts_load_or_are_refused_in_one_line(tmp_path: Path) -> None:
    """Bytes, not values: cut, doubled and scrambled lines, control characters, aliases."""
    rng = random.Random(f"{SEED}/texts")
    text = (ROOT / "params" / "tiny.yaml").read_text()
    lines = text.splitlines(keepends=True)
    path = tmp_path / "params.yaml"
    junk = ["\x00", "\x0c", "\t", "&a ", "*a", "<<: *a\n", ": :", "- ", "{", "]", "\ufeff",
            "'", '"', "%YAML 1.1\n", "!!python/object:os.system\n", "? ", "|\n", "\u2028"]

    def mutated() -> str:
        out = list(lines)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(out))
            action = rng.random()
            if action < 0.3:
                out[i] = out[i][: rng.randrange(len(out[i]) + 1)] + "\n"
            elif action < 0.5:
                out.insert(i, out[rng.randrange(len(out))])
            elif action < 0.8:
                cut = rng.randrange(len(out[i]) + 1)
                out[i] = out[i][:cut] + rng.choice(junk) + out[i][cut:]
            else:
                del out[i]
        return "".join(out)

    def load(content: str) -> Any:
        path.write_text(content.replace("outputs", str(tmp_path / "outputs")))
        return load_params(path)

    cases = [mutated() for _ in range(COUNTS["parameter texts"])]
    tally = _check("parameter text", cases, load, (ParamsError,))
    assert tally["refused"] > 0


# ------------------------------------------------------------------------------------------
# Run records
# ------------------------------------------------------------------------------------------
def _junk_line(rng: random.Random) -> str:
    return rng.choice(["", "{", "[]", "null", "42", '"text"', "{\"a\": 1", "\x00\x01",
                       json.dumps({"persona_id": "b0"})])


def test_mutated_evaluation_records_are_read_or_refused_by_file_and_line(tmp_path: Path) -> None:
    from aloe.core.config import params_from_dict
    from aloe.core.records import DataError, write_records
    from aloe.stages import evaluation

    rng = random.Random(f"{SEED}/records")
    params = params_from_dict(tiny_dict(tmp_path, evaluation={"turns": 2,
                                                              "bootstrap_samples": 20}))
    personas = [{"id": f"b{i}", "profile": "He is a cook.", "personality": "He is calm."}
                for i in range(3)]
    write_records(params.layout.benchmark, personas)
    good = [{"model": spec.name, "persona_id": p["id"], "turn": turn, "score": rng.randint(1, 5),
             "reply": "Sure.", "user": "Hi"}
            for spec in params.evaluation.models for p in personas for turn in (1, 2)]
    path = params.layout.eval_records("base")

    def read(lines: list[str]) -> Any:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
        records = evaluation.load_records(params)
        for record in records:  # what was accepted is on the scale, and computes
            assert record.get("score") is None or 1 <= record["score"] <= 5
        return evaluation.compute_metrics(params, records, personas)

    cases = []
    for _ in range(COUNTS["evaluation records"]):
        records = [r for r in good if r["model"] == "base"]
        lines = [json.dumps(_mutate(r, rng, edits=1) if rng.random() < 0.3 else r)
                 for r in records]
        if rng.random() < 0.2:
            lines.insert(rng.randrange(len(lines)), _junk_line(rng))
        cases.append(lines)
    tally = _check("evaluation records", cases, read, (DataError,))
    assert tally["accepted"] > 0 and tally["refused"] > 0


def test_mutated_conversation_files_are_read_or_refused_by_file_and_line(
        tmp_path: Path) -> None:
    from aloe.core.config import params_from_dict
    from aloe.core.records import DataError
    from aloe.presentation import report
    from aloe.stages.conversations import load_conversations

    rng = random.Random(f"{SEED}/conversations")
    params = params_from_dict(tiny_dict(tmp_path))
    trees = [{"id": f"conv-{i:05d}", "index": i, "turns": [{"turn": 1, "user": "Hi"}],
              "persona": {"id": f"p{i}"}} for i in range(4)]

    def read(lines: list[str]) -> Any:
        path = params.layout.conversations
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
        loaded = load_conversations(params)
        assert report.product_counts(params.layout)["conversations"] == len(loaded)
        return loaded

    cases = []
    for _ in range(COUNTS["conversation files"]):
        lines = [json.dumps(_mutate(t, rng, edits=1) if rng.random() < 0.2 else t)
                 for t in trees]
        if rng.random() < 0.3:
            lines.append(lines[rng.randrange(len(lines))])  # a line written twice
        if rng.random() < 0.2:
            lines.insert(rng.randrange(len(lines)), _junk_line(rng))
        cases.append(lines)
    tally = _check("conversations", cases, read, (DataError,))
    assert tally["accepted"] > 0 and tally["refused"] > 0


def test_mutated_side_records_are_read_or_refused_by_file_and_line(tmp_path: Path) -> None:
    """Stage 5's side records (inference probes, the simulated user measured, the second
    judge), the imported human ratings and stage 1's files (a pool, the rounds, the
    candidates, the leakage check), each mutated and read where the workbook reads it: the
    figures of metrics.json, the judge-human agreement, notebook 01's tables."""
    from aloe.core.config import params_from_dict
    from aloe.core.records import DataError, write_records
    from aloe.stages import evaluation, personas

    rng = random.Random(f"{SEED}/side records")
    data = tiny_dict(tmp_path, evaluation={"turns": 2, "bootstrap_samples": 20,
                                           "inference_probe": True, "simulator_check": True,
                                           "judge_check": {"sample": 4}})
    data["roles"]["second_judge"] = dict(data["roles"]["judge"])
    params = params_from_dict(data)
    layout = params.layout
    people = [{"id": f"b{i}", "profile": "He is a cook.", "personality": "He is calm."}
              for i in range(3)]
    write_records(layout.benchmark, people)
    keys = [(p["id"], turn) for p in people for turn in (1, 2)]
    records = [{"model": "base", "persona_id": pid, "turn": turn, "score": 1 + turn,
                "user": "Hi", "reply": "Sure."} for pid, turn in keys]
    write_records(layout.eval_records("base"), records)
    good = {
        layout.probe_records("base"): [
            {"model": "base", "persona_id": pid, "turn": turn, "statement": "You cook.",
             "accuracy": 0.5, "truncated": False} for pid, turn in keys],
        layout.simulator_records("base"): [
            {"model": "base", "persona_id": pid, "turn": turn, "revealed": 0.2 * turn,
             "contradiction": turn == 2} for pid, turn in keys],
        layout.judge_check(): [
            {"model": "base", "persona_id": pid, "turn": turn, "main_score": 1 + turn,
             "second_score": 2} for pid, turn in keys],
        layout.human_ratings(): [
            {"kit": "k1", "rater": rater, "item": f"i{n}", "rating": 1 + n % 5,
             "model": "base", "persona_id": pid, "turn": turn, "judge_score": 1 + turn}
            for rater in ("ann", "bob") for n, (pid, turn) in enumerate(keys)],
        layout.pool("profiles"): [{"id": f"profile-{n:04d}", "text": f"He is cook {n}.",
                                   "source": "seed"} for n in range(1, 4)],
        layout.persona_rounds: [
            {"pool": "profiles", "round": n, "calls": 1, "samples": [n], "unusable": 0,
             "candidates": 4, "admitted": 1, "rejected": 3, "surplus": 0, "pool_size": 3 + n,
             "admission_rate": 0.25} for n in range(3)],
        layout.persona_candidates: [
            {"pool": "profiles", "round": 0, "call": 0, "text": "He is a baker.",
             "max_similarity": 0.4, "nearest_id": "profile-0001", "status": status,
             "id": None} for status in ("admitted", "rejected", "surplus")],
        layout.persona_leakage: [{"benchmark_id": p["id"], "nearest_train_id": "persona-1",
                                  "similarity": 0.5} for p in people],
    }
    readers = {
        **dict.fromkeys(list(good)[:3], lambda: evaluation.compute_metrics(params, records,
                                                                           people)),
        layout.human_ratings(): lambda: evaluation.human_agreement(params),
        layout.pool("profiles"): lambda: personas.read_pool(layout, "profiles"),
        layout.persona_rounds: lambda: personas.rounds_table(layout),
        layout.persona_candidates: lambda: personas.candidates_table(layout),
        layout.persona_leakage: lambda: personas.persona_leakage_table(layout),
    }
    for path, lines in good.items():
        write_records(path, lines)
        readers[path]()  # the good files read

    def read(case: tuple[Path, list[str]]) -> Any:
        path, lines = case
        path.write_text("".join(line + "\n" for line in lines))
        try:
            return readers[path]()
        finally:
            write_records(path, good[path])

    cases = []
    for _ in range(COUNTS["side records"]):
        path = rng.choice(list(good))
        lines = [json.dumps(_mutate(r, rng, edits=1) if rng.random() < 0.3 else r)
                 for r in good[path]]
        if rng.random() < 0.2:
            lines.append(lines[rng.randrange(len(lines))])  # a line written twice
        if rng.random() < 0.1:
            lines.insert(rng.randrange(len(lines)), _junk_line(rng))
        cases.append((path, lines))
    tally = _check("side records", cases, read, (DataError,))
    assert tally["accepted"] > 0 and tally["refused"] > COUNTS["side records"] // 4


# ------------------------------------------------------------------------------------------
# Ratings files
# ------------------------------------------------------------------------------------------
def test_mutated_ratings_files_are_read_or_refused_in_one_line(tmp_path: Path) -> None:
    from aloe.presentation.ratings import RatingsError, read_ratings_file

    rng = random.Random(f"{SEED}/ratings")
    key = {"kit": "abc123", "categories": [1, 2, 3, 4, 5],
           "items": {f"item-{i}": {"persona_id": "b0"} for i in range(5)}}
    saved = {"kit": "abc123", "variant": "live", "rater": "ann", "protocol": "aloe",
             "ratings": {f"item-{i}": 1 + i % 5 for i in range(5)}}
    path = tmp_path / "ratings.json"

    def read(text: str) -> Any:
        path.write_text(text)
        rater, ratings = read_ratings_file(path, key, "live")
        assert isinstance(rater, str) and rater
        assert all(type(v) is int and v in key["categories"] for v in ratings.values())
        return ratings

    cases = []
    for _ in range(COUNTS["ratings files"]):
        text = json.dumps(_mutate(saved, rng, edits=rng.randint(1, 3)), allow_nan=True)
        if rng.random() < 0.15:
            text = text[: rng.randrange(len(text) + 1)]
        cases.append(text)
    tally = _check("ratings file", cases, read, (RatingsError,))
    assert tally["refused"] > 0


# ------------------------------------------------------------------------------------------
# Backend answers
# ------------------------------------------------------------------------------------------
def _answer() -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."},
                         "finish_reason": "stop",
                         "logprobs": {"content": [{"token": "Hello", "logprob": -0.1,
                                                   "top_logprobs": [{"token": "Hi",
                                                                     "logprob": -2.0}]}]}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2}}


def test_mutated_backend_answers_are_used_or_refused_and_nothing_malformed_is_cacheable() -> None:
    rng = random.Random(f"{SEED}/answers")

    def read(answer: Any) -> Any:
        completion = _completion(answer)
        problem = answer_problem(completion.to_json())  # what the cache would keep
        assert problem is None, problem
        assert all(math.isfinite(t["logprob"]) or math.isinf(t["logprob"])
                   for t in completion.logprobs or [])
        return completion

    cases = [_mutate(_answer(), rng, edits=rng.randint(1, 3))
             for _ in range(COUNTS["backend answers"])]
    tally = _check("backend answer", cases, read, (MalformedAnswer,))
    assert tally["accepted"] > 0 and tally["refused"] > 0


def test_the_fuzz_counts_in_the_docs_are_the_tests() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    assert f"seed {SEED}" in doc
    for kind, count in COUNTS.items():
        assert f"{count:,} {kind}" in doc, kind
