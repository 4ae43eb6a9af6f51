"""Stage 1: reading text pools, the novelty filter on real embeddings, reply parsing, pairing,
the ALOE benchmark, and the stage itself with the real local model (growth, resume)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aloe.core.config import params_from_dict
from aloe.core.records import read_records
from aloe.stages import personas
from aloe.stages.personas import NoveltyFilter, pair_personas, parse_reply
from aloe.stages.pools import builtin_seeds, load_aloe_benchmark, read_text_pool
from tests.conftest import tiny_dict


@pytest.mark.slow
def test_builtin_seeds_are_our_own(reference_dir: Path) -> None:
    for kind, official in [("profile", "profile.jsonl"), ("personality", "personality.jsonl")]:
        seeds = builtin_seeds(kind)
        assert len(seeds) == 20 and len(set(seeds)) == 20
        theirs = read_text_pool(reference_dir / official)
        theirs += read_text_pool(reference_dir / official.replace(".jsonl", "_eval.jsonl"))
        assert not set(seeds) & set(theirs)
        novelty = NoveltyFilter(0.95)
        novelty.extend(theirs)
        best, _ = novelty.similarity_to_pool(seeds)
        assert best.max() < 0.95, "a seed is a near-copy of an official ALOE item"


# ------------------------------------------------------------------------------------------
# NoveltyFilter on real embeddings
# ------------------------------------------------------------------------------------------
POOL = [
    "She is a 34-year-old nurse in Dublin who runs marathons and keeps two cats.",
    "He is a retired train driver who grows vegetables and plays the accordion at weddings.",
    "He is a 19-year-old student who streams video games every night from his dorm room.",
]


def test_novelty_filter_rejects_paraphrases_and_admits_new_texts() -> None:
    novelty = NoveltyFilter(0.6)
    novelty.extend(POOL)
    admitted = novelty.admit([
        "She is a nurse aged 34 living in Dublin; she runs marathons and has two cats.",
        "The recipe needs two cups of flour, one egg and a pinch of salt.",
    ])
    assert admitted == ["The recipe needs two cups of flour, one egg and a pinch of salt."]
    first, second = novelty.last_screening
    assert first.status == "rejected" and first.nearest == 0 and first.max_similarity > 0.6
    assert second.admitted and second.max_similarity < 0.6
    assert novelty.last_similarities == [first.max_similarity, second.max_similarity]
    assert len(novelty) == 4 and novelty.texts[-1] == admitted[0]


def test_novelty_filter_admits_one_of_two_near_identical_candidates() -> None:
    novelty = NoveltyFilter(0.6)
    novelty.extend(POOL)
    twins = ["The museum opens at nine and closes at five on weekdays.",
             "The museum opens at 9 and closes at 5 on weekdays."]
    assert novelty.admit(twins) == twins[:1]
    assert novelty.last_screening[1].nearest == len(POOL)  # rejected because of its twin
    assert NoveltyFilter(0.6).admit(twins) == twins[:1]  # also into an empty pool


def test_novelty_filter_never_reencodes_the_pool() -> None:
    novelty = NoveltyFilter(0.6)
    novelty.extend(POOL * 30)
    encoded: list[int] = []
    original = novelty.encode
    def counting(texts):
        encoded.append(len(texts))
        return original(texts)

    novelty.encode = counting  # type: ignore[method-assign]
    novelty.admit(["A quiet lighthouse keeper who paints seabirds.", "A chess coach in Lagos."])
    assert encoded == [2]


def test_novelty_filter_limit_marks_surplus_and_extend_does_not_check() -> None:
    novelty = NoveltyFilter(0.6)
    novelty.extend([POOL[0], POOL[0]])  # unchecked: duplicates allowed
    assert len(novelty) == 2
    picked = novelty.screen(["A beekeeper in Crete.", "A jazz drummer in Oslo.",
                             "A pastry chef in Lyon."], limit=1)
    assert [s.status for s in picked] == ["admitted", "surplus", "surplus"]
    assert len(novelty) == 3
    nn = novelty.nearest_neighbour_similarities()
    assert nn[0] == pytest.approx(1.0, abs=1e-4) and nn[2] < 0.6


def test_unknown_embedding_model_fails_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(personas.EmbeddingModelError, match="local folder"):
        NoveltyFilter(0.6, model="no-such-org/no-such-embedding-model")


# ------------------------------------------------------------------------------------------
# Parsing generator replies
# ------------------------------------------------------------------------------------------
A = "She is a 40-year-old baker in Porto who swims every morning."
B = "He is a 22-year-old courier in Seoul who collects vinyl records."
C = "She is a 71-year-old retired judge who volunteers at an animal shelter."


@pytest.mark.parametrize("reply", [
    f"{A}\n{B}\n{C}",
    f"{A}\n\n{B}\n\n{C}\n",
    f"Here are 3 new profiles:\n\n1. {A}\n2. {B}\n3. {C}\n\nI hope these help!",
    f"- {A}\n- {B}\n* {C}",
    f"**Profile 1:** {A}\n**Profile 2:** {B}\nProfile 3: \"{C}\"",
    f"1) {A[:30]}\n   {A[30:]}\n2) {B}\n3) {C}",
    f"```\n{A}\n{B}\n{C}\n```",
    f"Here are three new profiles: {A}\n{B}\n{C}",
    f"1. {A} 2. {B} 3. {C}",
    f"{A} {B} {C}",  # run together in one paragraph
])
def test_parse_reply_handles_common_layouts(reply: str) -> None:
    assert parse_reply(reply).items == [A, B, C]


def test_parse_reply_trims_a_cut_off_last_item_and_drops_junk() -> None:
    parsed = parse_reply(f"{A}\n{B}\nShe is a 71-year-old retired judge who", "length")
    assert parsed.items == [A, B] and len(parsed.dropped) == 1
    traits = "He is calm and patient. He is dry-humoured and a little shy."
    parsed = parse_reply(f"{traits} He is curious about", "length")
    assert parsed.items == [traits] and parsed.dropped == ["He is curious about"]
    junk = "The list of personalities is perfect and a classic example of diverse traits."
    assert parse_reply(f"{junk}\n{A}").items == [A]
    assert parse_reply("Sure!").items == []
    assert parse_reply("").items == []
    assert parse_reply(f"{A}\n{A}").items == [A]


# ------------------------------------------------------------------------------------------
# Pairing and stopping
# ------------------------------------------------------------------------------------------
def _items(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "text": f"{prefix} text {i}", "source": "seed"}
            for i in range(n)]


def test_pair_personas_is_seeded_and_distinct_per_profile() -> None:
    profiles, traits = _items("p", 7), _items("q", 5)
    first = pair_personas(profiles, traits, per_profile=3, seed=1)
    assert first == pair_personas(profiles, traits, per_profile=3, seed=1)
    assert first != pair_personas(profiles, traits, per_profile=3, seed=2)
    assert len(first) == 21 and len({p["id"] for p in first}) == 21
    for profile in profiles:
        mine = [p["personality_id"] for p in first if p["profile_id"] == profile["id"]]
        assert len(mine) == len(set(mine)) == 3
    assert len(pair_personas(profiles, traits, per_profile=10, seed=1)) == 35  # capped at 5


def test_stop_reason_rules(tiny_params) -> None:
    config = tiny_params.personas.model_copy(update={"saturation_window": 2,
                                                     "saturation_floor": 0.1, "max_rounds": 4})
    good = {"candidates": 10, "admitted": 5}
    poor = {"candidates": 10, "admitted": 0}
    assert personas.stop_reason(30, 30, [], config) == "target"
    assert personas.stop_reason(5, 30, [good], config) is None
    assert personas.stop_reason(5, 30, [good, poor, poor], config) == "saturation"
    assert personas.stop_reason(5, 30, [poor, {"candidates": 0, "admitted": 0}],
                                config) == "saturation"
    assert personas.stop_reason(5, 30, [good] * 4, config) == "max_rounds"


# ------------------------------------------------------------------------------------------
# The stage without a generator: the official files as pool and benchmark
# ------------------------------------------------------------------------------------------
@pytest.mark.slow  # embeds the 662 official personas for the leakage table: 44 s in CI
def test_stage_with_the_official_files_as_pool_and_benchmark(tmp_path: Path,
                                                             reference_dir: Path) -> None:
    """The official training pool, paired as released (passes drawing with replacement), and
    the official benchmark that stage 5 evaluates: no benchmark pool is grown, and every
    benchmark persona gets its nearest training persona (the official pools share no user)."""
    params = params_from_dict(tiny_dict(tmp_path, personas={
        "import_profiles": str(reference_dir / "profile.jsonl"),
        "import_personalities": str(reference_dir / "personality.jsonl"),
        "import_as": "pool", "pairings_per_profile": 2, "pairing": "random"},
        evaluation={"benchmark": "aloe",
                    "aloe_profiles": str(reference_dir / "profile_eval.jsonl"),
                    "aloe_personalities": str(reference_dir / "personality_eval.jsonl")}))
    summary = personas.run_stage(params)
    assert (summary.profiles, summary.personalities) == (331, 71)
    assert summary.personas == 662 and summary.benchmark == 100 and not summary.leakage_dropped
    assert summary.stop_reason == "target" and not summary.rounds
    layout = params.layout
    assert {r["source"] for r in read_records(layout.pool("profiles"))} == {"aloe"}
    paired = read_records(layout.personas)
    assert [p["profile_id"] for p in paired[:331]] == [p["profile_id"] for p in paired[331:]]
    bench = read_records(layout.benchmark)
    assert bench == load_aloe_benchmark(reference_dir / "profile_eval.jsonl",
                                        reference_dir / "personality_eval.jsonl")
    leakage = personas.persona_leakage_table(layout)
    assert len(leakage) == 100 and leakage["similarity"].between(0.5, 0.92).all()
    assert set(leakage["nearest_train_id"]) <= {p["id"] for p in paired}
    report = personas.leakage_report(layout)
    assert report.loc["profile", "benchmark_items"] == 20
    assert 0 < report.loc["profile", "max_train_similarity"] < 1


def test_near_copies_of_benchmark_users_leave_the_training_personas() -> None:
    from aloe.stages.personas.leakage import screen

    bench = [{"id": "b1", "profile": "She is a 38-year-old glassblower in Murano who sails on "
                                     "Sundays and has twin sons.",
              "personality": "She is dry-witted, blunt and hates small talk."},
             {"id": "b2", "profile": "He is a 70-year-old retired postman in Cork who breeds "
                                     "racing pigeons.",
              "personality": "He is gentle, slow to speak and fond of old stories."}]
    training = [{"id": "t-copy", "profile": bench[0]["profile"],
                 "personality": bench[0]["personality"]},
                {"id": "t-other", "profile": "He is a 25-year-old coder in Lagos who plays "
                                             "chess online.",
                 "personality": "He is upbeat, talkative and loves puns."}]
    result = screen(training, bench, threshold=0.92, embedding_model="all-MiniLM-L6-v2")
    assert [p["id"] for p in result.kept] == ["t-other"]
    assert [(d["id"], d["benchmark_id"]) for d in result.dropped] == [("t-copy", "b1")]
    assert result.dropped[0]["similarity"] > 0.99
    nearest = {row["benchmark_id"]: row for row in result.nearest}
    assert nearest["b1"]["nearest_train_id"] == "t-copy"
    assert nearest["b2"]["similarity"] < 0.92


@pytest.mark.slow
def test_no_benchmark_pool_is_grown_that_evaluation_will_not_use(tmp_path: Path,
                                                                  reference_dir: Path) -> None:
    """Evaluating on the official files, stage 1 grows only the training pools. (The stub
    server stands in for the persona generator: what is checked is which pools are grown.)"""
    from tests.support.stub_server import StubServer

    with StubServer(seed=0) as stub:
        data = tiny_dict(tmp_path, personas={"profiles_target": 22, "personalities_target": 22},
                         evaluation={"benchmark": "aloe",
                                     "aloe_profiles": str(reference_dir / "profile_eval.jsonl"),
                                     "aloe_personalities": str(reference_dir /
                                                               "personality_eval.jsonl")})
        data["roles"]["generator"] = {"model": "stub", "base_url": stub.base_url}
        summary = personas.run_stage(params_from_dict(data))
    grown = {r["pool"] for r in summary.rounds}
    assert grown == {"profiles", "personalities"}  # no benchmark_* pool
    assert summary.benchmark == 100 and summary.benchmark_source == "aloe"


# ------------------------------------------------------------------------------------------
# The stage with the real local model: growth, interruption, resume
# ------------------------------------------------------------------------------------------
SMALL = {
    "personas": {"profiles_target": 40, "personalities_target": 40, "generate_n": 3,
                 "calls_per_round": 1, "max_rounds": 2, "threshold": 0.8,
                 "personality_threshold": 0.9, "pairings_per_profile": 2,
                 "benchmark_profiles": 1, "benchmark_personalities": 1},
    "roles": {**tiny_dict(Path("/unused"))["roles"],
              "generator": {"model": "local", "base_url": "local", "temperature": 0.8,
                            "max_tokens": 120, "concurrency": 2, "timeout": 900}},
}
PRODUCTS = ["profiles.jsonl", "personalities.jsonl", "personas.jsonl", "benchmark.jsonl",
            "benchmark_profiles.jsonl", "benchmark_personalities.jsonl"]


def _same_records(a: Any, b: Any, tolerance: float = 1e-3) -> bool:
    """Equal records, except that floats may differ by `tolerance`: the same text embedded in
    another batch (a resumed run embeds fewer texts at once than a fresh one) gets similarities
    that differ in the fourth decimal (float32 sums in another order; seen: 0.7928 against
    0.7927). Texts, counts and order must still be identical."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tolerance
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_records(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_records(x, y, tolerance) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("persona_cache") / "llm.sqlite"


def _small_params(tmp_path: Path, cache: Path, name: str):
    data = tiny_dict(tmp_path, **SMALL)
    data["run"].update(name=name, cache_path=str(cache))
    return params_from_dict(data, source=f"small({name})")


@pytest.mark.slow
def test_stage_grows_and_resumes_to_the_same_pool(tmp_path: Path, shared_cache: Path,
                                                  local_server) -> None:
    interrupted = _small_params(tmp_path, shared_cache, "interrupted")

    def stop_mid_round(event: str, info: dict) -> None:  # after the items, before the log
        if event == "items_written" and info["pool"] == "profiles" and info["round"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        personas.run_stage(interrupted, hook=stop_mid_round)
    run = interrupted.layout.run_dir
    logged = [(r["pool"], r["round"]) for r in read_records(interrupted.layout.persona_rounds)]
    assert ("profiles", 0) in logged and ("profiles", 1) not in logged

    resumed = personas.run_stage(interrupted)
    fresh_params = _small_params(tmp_path, shared_cache, "fresh")
    fresh, fresh_run = personas.run_stage(fresh_params), fresh_params.layout.run_dir
    for name in PRODUCTS:
        assert _same_records(read_records(run / name), read_records(fresh_run / name)), name
    for name in ["profiles.jsonl", "personalities.jsonl"]:
        texts = [r["text"] for r in read_records(run / name)]
        assert len(texts) == len(set(texts)), f"duplicates in {name}"
    rounds = read_records(interrupted.layout.persona_rounds)
    keys = [(r["pool"], r["round"]) for r in rounds]
    assert len(keys) == len(set(keys)) and ("profiles", 1) in keys
    candidates = read_records(interrupted.layout.persona_candidates)
    assert len(candidates) == sum(r["candidates"] for r in rounds)

    # what the stage wrote is consistent
    assert resumed.table().equals(fresh.table())
    profiles = read_records(run / "profiles.jsonl")
    assert [p["source"] for p in profiles[:20]] == ["seed"] * 20
    assert {p["source"] for p in profiles[20:]} <= {"generated"}
    assert resumed.profiles == len(profiles)
    assert resumed.profiles + resumed.personalities > 40, "neither pool grew"
    assert resumed.personas == 2 * resumed.profiles
    bench_profiles = read_records(run / "benchmark_profiles.jsonl")
    bench_traits = read_records(run / "benchmark_personalities.jsonl")
    assert resumed.benchmark == len(bench_profiles) * min(1, len(bench_traits))
    assert all(item["train_similarity"] <= 0.9 for item in bench_profiles + bench_traits)
    for pool in resumed.pools.values():
        assert pool.stop_reason in personas.STOP_REASONS
        assert pool.calls == pool.rounds  # calls_per_round: 1
    summary = json.loads(interrupted.layout.persona_summary.read_text())
    assert summary["profiles"] == resumed.profiles


def test_pool_map_is_computed_once_per_pool(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The map (PCA positions, nearest-neighbour similarity) covers every pool and benchmark
    item; the report and reruns reuse it until a pool changes."""
    from aloe.core.records import write_records

    params = params_from_dict(tiny_dict(tmp_path), source="test")
    texts = {"profiles": ["A nurse in Lyon who runs marathons.", "A retired sailor in Oslo.",
                          "A student of Korean poetry in Seoul."],
             "personalities": ["Patient and dry-humoured.", "Impatient, wants lists.",
                               "Warm and chatty."]}
    for name, items in texts.items():
        write_records(params.layout.pool(name),
                      [{"id": f"{name}-{i}", "text": t, "source": "seed"}
                       for i, t in enumerate(items)])
        write_records(params.layout.pool(f"benchmark_{name}"),
                      [{"id": f"b-{name}", "text": items[0] + " Also likes tea.",
                        "source": "generated"}])
    first = personas.pool_map(params)
    assert len(first) == 8 and set(first["source"]) == {"seed", "benchmark"}
    assert first[["x", "y", "nn_similarity"]].notna().all().all()

    def no_model(*args, **kwargs):
        raise AssertionError("the embedding model was loaded again")

    monkeypatch.setattr(personas.views, "NoveltyFilter", no_model)
    assert personas.pool_map(params).equals(first)
    write_records(params.layout.pool("profiles"),
                  [{"id": "profiles-0", "text": "A beekeeper in Cork.", "source": "seed"}])
    with pytest.raises(AssertionError, match="loaded again"):
        personas.pool_map(params)


def test_failed_generator_calls_fail_the_stage_in_one_line(tmp_path: Path) -> None:
    """A round is all its calls or nothing: one lost call fails the stage with the count, the
    first reason (role, model, URL) and what a rerun does (issue 16)."""
    from aloe.core.errors import IncompleteStageError
    from tests.conftest import stub_roles
    from tests.support.stub_server import StubServer

    with StubServer(fail_rate=1.0) as stub:
        data = tiny_dict(tmp_path, roles=stub_roles(stub.base_url, max_retries=0),
                         personas={"calls_per_round": 3})
        with pytest.raises(IncompleteStageError) as error:
            personas.run_stage(params_from_dict(data))
    message = str(error.value)
    import re

    assert re.match(r"3 of 3 generator calls of round 0 of pool '(profiles|personalities)' "
                    r"could not finish; first: call 0: role 'generator' \(model stub at "
                    f"{re.escape(stub.base_url)}" r"\): failed after 1 attempts: "
                    "InternalServerError", message), message
    assert message.endswith("a rerun retries only those 3") and "\n" not in message


@pytest.mark.slow
def test_a_pool_file_cut_short_names_the_real_cause(tmp_path: Path) -> None:
    """A profiles.jsonl cut to fewer lines than its seeds used to be blamed on "other seeds"."""
    from aloe.core.records import DataError
    from tests.conftest import stub_roles
    from tests.support.stub_server import StubServer

    with StubServer() as stub:
        data = tiny_dict(tmp_path, roles=stub_roles(stub.base_url, max_tokens=400),
                         personas={"profiles_target": 24, "personalities_target": 22,
                                   "generate_n": 6, "max_rounds": 2, "threshold": 0.95,
                                   "benchmark_profiles": 1, "benchmark_personalities": 1})
        params = params_from_dict(data)
        personas.run_stage(params)
        pool = params.layout.pool("profiles")
        last = [r for r in read_records(params.layout.persona_rounds)
                if r["pool"] == "profiles"][-1]
        assert last["pool_size"] > 21
        for keep_lines in (21, 5):  # past the 20 seeds, then within them
            pool.write_text("".join(pool.read_text().splitlines(keepends=True)[:keep_lines]))
            with pytest.raises(DataError) as error:
                personas.run_stage(params)
            assert str(error.value) == (
                f"{pool}: holds {keep_lines} items but {params.layout.persona_rounds} records "
                f"{last['pool_size']} after round {last['round']}: the file was cut short (a "
                "copy or a write that did not finish, or an edit); restore it, or delete the "
                "run folder to start over")


def test_records_compare_equal_up_to_embedding_noise_only() -> None:
    record = {"text": "a nurse", "train_similarity": 0.7928, "round": 1}
    assert _same_records([record], [{**record, "train_similarity": 0.7927}])
    assert not _same_records([record], [{**record, "train_similarity": 0.80}])
    assert not _same_records([record], [{**record, "text": "a pilot"}])
    assert not _same_records([record], [{**record, "round": 2}])
    assert not _same_records([record], [record, record])


def test_stage_1_files_off_their_schema_are_refused_by_file_and_line(tmp_path: Path) -> None:
    """The pools, the rounds log, every screened candidate and the leakage check have their
    schemas (issue 27): a value of the wrong type or range, or a line written twice, is named
    by file and line by the stage resuming and by the notebook's tables, never read as data
    (an admitted count of "2" ended the stage in a TypeError)."""
    from aloe.core.records import DataError, write_records
    from tests.conftest import stub_roles

    params = params_from_dict(tiny_dict(tmp_path, roles=stub_roles("http://127.0.0.1:9/v1")))
    layout = params.layout
    item = {"id": "profile-0001", "text": "He is a cook.", "source": "seed"}
    logged = {"pool": "profiles", "round": 0, "calls": 1, "samples": [0], "unusable": 0,
              "dropped_fragments": 0, "candidates": 4, "admitted": 2, "rejected": 2,
              "surplus": 0, "pool_size": 22, "admission_rate": 0.5, "unusable_replies": [],
              "dropped": []}
    candidate = {"pool": "profiles", "round": 0, "call": 0, "text": "He is a baker.",
                 "max_similarity": 0.4, "nearest_id": "profile-0001", "status": "admitted",
                 "id": "profile-0021"}
    nearest = {"benchmark_id": "bench-001", "nearest_train_id": "persona-01",
               "similarity": 0.61}
    write_records(layout.benchmark, [{"id": "bench-001", "profile": "He is a cook.",
                                      "personality": "He is calm."}])

    def resume() -> None:
        personas.run_stage(params)

    cases = {  # file: (good record, a bad one, what is said, its readers)
        layout.pool("profiles"): (item, {**item, "id": "profile-0002", "text": 7},
                                  "pool item 'profile-0002' without a text",
                                  [resume, lambda: personas.read_pool(layout, "profiles")]),
        layout.persona_rounds: (logged, {**logged, "round": 1, "admitted": "2"},
                                "round 1 of pool 'profiles': admitted '2' is not a count",
                                [resume, lambda: personas.rounds_table(layout)]),
        layout.persona_candidates: (candidate, {**candidate, "status": "kept"},
                                    "status 'kept' is not one of admitted, rejected, surplus",
                                    [resume, lambda: personas.candidates_table(layout)]),
        layout.persona_leakage: (nearest, {**nearest, "similarity": "high"},
                                 "similarity 'high' is not a number from -1 to 1",
                                 [lambda: personas.persona_leakage_table(layout)]),
    }
    for path, (good, bad, said, readers) in cases.items():
        twice = "written twice (first on line 1)" if path != layout.persona_candidates else None
        for lines, says in [([good, bad], said), ([good, good], twice)]:
            if says is None:
                continue
            write_records(path, lines)
            for read in readers:
                with pytest.raises(DataError) as error:
                    read()
                assert str(error.value).startswith(f"{path}:2: ") and says in str(error.value)
        path.unlink()
    write_records(layout.persona_leakage, [nearest])
    assert list(personas.persona_leakage_table(layout)["similarity"]) == [0.61]
