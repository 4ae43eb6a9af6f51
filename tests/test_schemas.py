"""Each run file's schema (`aloe.core.schemas`): refused when written (nothing written) and when
read (file and line), for every kind of record a stage writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aloe.core import protocols, schemas
from aloe.core.records import DataError, SchemaError, append_records, read_records, write_records


# ------------------------------------------------------------------------------------------
# One schema per run file, held by its writer and every reader (issue 27)
# ------------------------------------------------------------------------------------------
def _schemas() -> dict[str, tuple]:
    """Per run file: its schema, a good record, and bad ones with what the refusal says."""
    probe = {"model": "base", "persona_id": "b0", "profile_id": "p0", "turn": 1,
             "statement": "You cook.", "truncated": False, "accuracy": 0.7,
             "raw_judgement": "7", "judge_attempts": 1, "shifted": False}
    measured = {"model": "base", "persona_id": "b0", "turn": 1, "revealed": 0.3,
                "revealed_raw": "3", "contradiction": False, "contradiction_raw": "No",
                "shifted": False}
    judged = {"model": "base", "persona_id": "b0", "turn": 1, "main_score": 4,
              "second_score": 3, "second_raw": "3", "second_attempts": 1}
    rating = {"kit": "k1", "rater": "ann", "item": "i1", "rating": 4, "model": "base",
              "persona_id": "b0", "profile_id": "p0", "turn": 1, "judge_score": 5}
    item = {"id": "profile-0001", "text": "He is a cook.", "source": "seed"}
    logged = {"pool": "profiles", "round": 0, "calls": 1, "samples": [0], "unusable": 0,
              "dropped_fragments": 0, "candidates": 4, "admitted": 2, "rejected": 2,
              "surplus": 0, "pool_size": 22, "admission_rate": 0.5, "unusable_replies": [],
              "dropped": []}
    candidate = {"pool": "profiles", "round": 0, "call": 0, "text": "He is a cook.",
                 "max_similarity": 0.4, "nearest_id": "profile-0003", "status": "admitted",
                 "id": "profile-0021"}
    nearest = {"benchmark_id": "bench-001", "nearest_train_id": "persona-01",
               "similarity": 0.61}
    tree = {"id": "conv-00000", "index": 0, "turns": [], "persona": {"id": "p0"}}
    aloe = protocols.get("aloe")
    return {
        "probes": (lambda: schemas.probe_check("base"), probe, [
            ({**probe, "turn": 2, "accuracy": 7},
             "accuracy 7 is not a number from 0 to 1 (or none)"),
            ({**probe, "turn": 2, "accuracy": float("nan")},
             "accuracy nan is not a number from 0 to 1 (or none)"),
            ({**probe, "turn": 2, "statement": ["You", "cook."]}, "statement is list, not text"),
            ({**probe, "model": "dpo"}, "model 'dpo' in the file of model 'base'"),
            ({**probe, "turn": 10**9}, "turn 1000000000 is not a turn number (1-1000)"),
            (probe, "the probe of persona 'b0' at turn 1 is written twice (first on line 1)")]),
        "simulator": (lambda: schemas.simulator_measure_check("base"), measured, [
            ({**measured, "turn": 2, "contradiction": "no"},
             "contradiction 'no' is not true or false (or none)"),
            ({**measured, "turn": 2, "revealed": -0.5},
             "revealed -0.5 is not a number from 0 to 1 (or none)"),
            ({k: v for k, v in measured.items() if k != "persona_id"},
             "persona_id None is not an id"),
            (measured, "the check of persona 'b0' at turn 1 is written twice (first on line "
                       "1)")]),
        "judge_check": (lambda: schemas.second_judge_check(aloe), judged, [
            ({**judged, "turn": 2, "second_score": 99},
             "second_score 99 is not on the aloe protocol's 1-5 scale"),
            ({**judged, "turn": 2, "main_score": "4"},
             "main_score '4' is not on the aloe protocol's 1-5 scale"),
            ({**judged, "turn": 2, "model": None}, "model None is not a model's name"),
            (judged, "the second judgement of model 'base', persona 'b0', turn 1 is written "
                     "twice (first on line 1)")]),
        "human_ratings": (lambda: schemas.human_rating_check([1, 2, 3, 4, 5]), rating, [
            ({**rating, "item": "i2", "rating": True},
             "rating True is not one of the kit's categories [1, 2, 3, 4, 5]"),
            ({**rating, "item": "i2", "rating": 9},
             "rating 9 is not one of the kit's categories [1, 2, 3, 4, 5]"),
            ({**rating, "item": "i2", "judge_score": 0},
             "judge_score 0 is not one of the kit's categories [1, 2, 3, 4, 5]"),
            ({**rating, "item": "i2", "rater": " "}, "rater ' ' is not text"),
            (rating, "the rating of item 'i1' by 'ann' is written twice (first on line 1)")]),
        "pool": (schemas.pool_item_check, item, [
            ({**item, "id": "profile-0002", "text": ""}, "pool item 'profile-0002' without a "
                                                         "text"),
            ({**item, "id": "profile-0002", "train_similarity": 3},
             "train_similarity 3 is not a number from -1 to 1 (or none)"),
            ({"text": "x", "source": "seed"}, "pool item without an id (text): id None"),
            (item, "pool item 'profile-0001' is written twice (first on line 1)")]),
        "rounds": (schemas.round_check, logged, [
            ({**logged, "round": 1, "admitted": "2"},
             "round 1 of pool 'profiles': admitted '2' is not a count"),
            ({**logged, "round": 1, "admitted": 5},
             "round 1 of pool 'profiles': admitted 5 of 4 candidates"),
            ({**logged, "round": -1}, "round -1 of pool 'profiles': round -1 is not a count"),
            (logged, "round 0 of pool 'profiles' is written twice (first on line 1)")]),
        "candidates": (schemas.candidate_check, candidate, [
            ({**candidate, "status": "maybe"},
             "status 'maybe' is not one of admitted, rejected, surplus"),
            ({**candidate, "max_similarity": "high"},
             "max_similarity 'high' is not a number from -1 to 1 (or none)")]),
        "leakage": (schemas.leakage_check, nearest, [
            ({**nearest, "benchmark_id": "bench-002", "similarity": None},
             "similarity None is not a number from -1 to 1"),
            (nearest, "benchmark persona 'bench-001' is written twice (first on line 1)")]),
        "conversations": (schemas.conversation_check, tree, [
            ({**tree, "id": "conv-00001", "index": -1},
             "conversation conv-00001: index -1 is not a position"),
            (tree, "conversation conv-00000 is written twice (first on line 1)")]),
    }


@pytest.mark.parametrize("name", ["probes", "simulator", "judge_check", "human_ratings", "pool",
                                  "rounds", "candidates", "leakage", "conversations"])
def test_a_run_files_schema_refuses_a_bad_value_when_written_and_when_read(
        tmp_path: Path, name: str) -> None:
    schema, good, bad_ones = _schemas()[name]
    path = tmp_path / f"{name}.jsonl"
    write_records(path, [good], check=schema())
    assert read_records(path, check=schema()) == [good]
    for bad, said in bad_ones:
        writer = schema()  # a writer's schema has seen the file it appends to
        read_records(path, check=writer)
        with pytest.raises(SchemaError) as refused:
            append_records(path, [bad], check=writer)
        assert str(refused.value) == (f"{path}: refusing to write a record that breaks its "
                                      f"schema ({said}); nothing was written")
        with pytest.raises(SchemaError):
            write_records(path, [good, bad], check=schema())
        assert read_records(path) == [good]  # neither write left anything
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(DataError) as error:
            read_records(path, check=schema())
        assert str(error.value) == (f"{path}:2: {said}; correct or remove the line (a rerun "
                                    "redoes what is removed)")
        write_records(path, [good])
