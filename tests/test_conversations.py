"""Stage 2: the user simulator, the parsers, the judge rules, and the stage end to end with the
real embedded model (resume after SIGKILL, a fault-injecting proxy, the notebook)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from aloe.core.chat import trim_unfinished
from aloe.core.config import params_from_dict
from aloe.core.records import read_records, write_records
from aloe.llm import Completion, LLMError, run_sync
from aloe.presentation.conversation_views import render_tree_html, rule_table, turn_table
from aloe.roles.simulator import clean_user_message, simulate_user
from aloe.stages.conversations import (
    ConversationMaker,
    conversation_id,
    load_conversations,
    parse_inferred,
    plan,
    plan_conversations,
    run_stage,
    summarise,
)
from tests.conftest import ROOT, embedded_model, tiny_dict
from tests.support.conversation_runs import (
    PERSONAS,
    hand_tree,
    persona_records,
    small_dict,
    with_personas,
)


# ------------------------------------------------------------------------------------------
# Text handling (no model)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ('"User: *smiles* Hey there! (laughs) I just got back from a ride."',
     "Hey there! I just got back from a ride."),
    ("I fixed the carburettor today.\nThe assistant: Nice!\nYou: thanks",
     "I fixed the carburettor today."),
    ("**You:** \u201cHonestly, work was rough today.\u201d", "Honestly, work was rough today."),
    ("[sighs] ok fine.", "ok fine."),
    ("Me: I am 34 (almost 35) and tired", "I am 34 (almost 35) and tired"),
    ("*waves*", ""),
])
def test_clean_user_message(raw: str, expected: str) -> None:
    assert clean_user_message(raw) == expected


def test_trim_unfinished_only_when_cut_off() -> None:
    assert trim_unfinished("Hello there. I went to the", "length") == "Hello there."
    assert trim_unfinished("Hello there. I went to the", "stop") == "Hello there. I went to the"
    assert trim_unfinished("no sentence end", "length") == "no sentence end"


@pytest.mark.parametrize("raw, expected", [
    ("Profile: works as a nurse\nPersonality: none", {"profile": "works as a nurse",
                                                      "personality": "none"}),
    ("**Profile:** likes bikes,\n  has a daughter\n**Personality**: Blunt.",
     {"profile": "likes bikes, has a daughter", "personality": "Blunt."}),
    ("- profile - None.\n- personality: not revealed yet",
     {"profile": "none", "personality": "none"}),
    ("Profile: a paramedic", {"profile": "a paramedic", "personality": "none"}),
    ("Profile: rides motorbikes\nPersonality: blunt\n\nUser: I'm off to the garage",
     {"profile": "rides motorbikes", "personality": "blunt"}),
    ("Profile: rides motorbikes\nUser: I'm off\nPersonality: blunt",
     {"profile": "rides motorbikes", "personality": "blunt"}),
    ("Profile: He/She is a paramedic.\nPersonalities: None",  # the released format
     {"profile": "He/She is a paramedic.", "personality": "none"}),
])
def test_parse_inferred(raw: str, expected: dict) -> None:
    assert parse_inferred(raw) == expected


def test_parse_inferred_without_format_is_none() -> None:
    assert parse_inferred("The user seems nice and likes talking.") is None
    assert parse_inferred("") is None


# ------------------------------------------------------------------------------------------
# The judge rules and unparseable replies, with a scripted stand-in for the LLM
# ------------------------------------------------------------------------------------------
class ScriptedLLM:
    """Answers each role with a function of the request: forces exact verdicts and malformed
    replies that a real small model produces only by chance."""

    def __init__(self, params: Any, judge: Any, inducer: str = "Profile: none\nPersonality: none",
                 logprobs: Any = None, reject_logprobs: bool = False):
        self.params, self.judge, self.inducer = params, judge, inducer
        self.logprobs, self.reject_logprobs = logprobs, reject_logprobs
        self.calls: list[tuple[str, int, bool]] = []
        self.requests: list[tuple[str, list[dict]]] = []

    async def chat(self, role: str, messages: list[dict], *, sample: int = 0,
                   logprobs: bool = False, **_: Any) -> Completion:
        self.calls.append((role, sample, logprobs))
        self.requests.append((role, [dict(m) for m in messages]))
        if role == "judge" and logprobs and self.reject_logprobs:
            raise LLMError("role 'judge' (model m at u): HTTP 400: logprobs not supported",
                           status_code=400)
        if role == "user":
            return Completion(text="*grins* I rebuilt a motorbike engine today.")
        if role == "inducer":
            return Completion(text=self.inducer)
        if role == "assistant":  # workbook: a hint in the system message; reference: in the turn
            hinted = any(word in messages[0]["content"] + messages[-1]["content"]
                         for word in ("learned this about them", "Hint:"))
            return Completion(text="Hinted reply." if hinted else "Plain reply.")
        prompt = next(m["content"] for m in reversed(messages)
                      if m["role"] == "user" and "Hinted reply." in m["content"])
        hinted_first = prompt.index("Hinted reply.") < prompt.index("Plain reply.")
        first = "hinted" if hinted_first else "plain"
        attempt = 1 if "Hinted reply." in messages[-1]["content"] else 2  # 2: a re-ask
        text = self.judge(first, attempt)
        return Completion(text=text, logprobs=self.logprobs(first) if logprobs and self.logprobs
                          else None)


def scripted_turn(tmp_path: Path, rule: str, llm_kwargs: dict, turns: int = 1,
                  style: str = "workbook") -> tuple[dict, ScriptedLLM]:
    params = params_from_dict(small_dict(tmp_path, n=1, turns=turns, judge_rule=rule,
                                         prompt_style=style))
    llm = ScriptedLLM(params, **llm_kwargs)
    maker = ConversationMaker(llm, params)  # type: ignore[arg-type]
    item = {"index": 0, "id": "conv-00000", "persona": persona_records(1)[0], "sample": 0}
    record = run_sync(maker.conversation(item))
    return record, llm


def prefers(branch: str):
    """A judge that sees through the order: always names `branch`'s position."""
    return lambda first, _attempt: "1" if first == branch else "2"


def test_both_orders_agreement_decides(tmp_path: Path) -> None:
    record, llm = scripted_turn(tmp_path, "both_orders", {"judge": prefers("hinted")})
    turn = record["turns"][0]
    assert turn["verdict"]["preferred"] == "hinted"
    assert [v["order"] for v in turn["verdict"]["votes"]] == [["hinted", "plain"],
                                                              ["plain", "hinted"]]
    assert turn["user"] == "I rebuilt a motorbike engine today."  # stage direction stripped
    assert turn["continued_with"] in ("hinted", "plain")


def test_both_orders_position_bias_is_inconsistent(tmp_path: Path) -> None:
    record, _ = scripted_turn(tmp_path, "both_orders", {"judge": lambda first, n: "1"})
    assert record["turns"][0]["verdict"]["preferred"] == "inconsistent"


def test_single_random_decides_with_one_vote(tmp_path: Path) -> None:
    record, llm = scripted_turn(tmp_path, "single_random", {"judge": lambda first, n: "1"})
    verdict = record["turns"][0]["verdict"]
    assert len(verdict["votes"]) == 1 and verdict["preferred"] in ("hinted", "plain")
    assert verdict["preferred"] == verdict["votes"][0]["order"][0]
    assert sum(role == "judge" for role, _, _ in llm.calls) == 1


def test_unparseable_replies_are_reasked_once_then_recorded(tmp_path: Path) -> None:
    record, llm = scripted_turn(tmp_path, "both_orders", {
        "judge": lambda first, n: "banana", "inducer": "I cannot tell."})
    turn = record["turns"][0]
    assert turn["verdict"]["preferred"] == "unparseable"
    assert all(v["pick"] is None and len(v["text"]) == 2 for v in turn["verdict"]["votes"])
    assert turn["inferred"] == {"profile": None, "personality": None, "parsed": False,
                                "asked": 2, "raw": "I cannot tell."}
    judge_samples = [s for role, s, _ in llm.calls if role == "judge"]
    assert len(judge_samples) == 4 and len(set(judge_samples)) == 2  # re-asks: another draw
    summary = summarise([record], params_from_dict(small_dict(tmp_path)))
    assert summary.inducer_unparseable == 1 and summary.judge_unparseable_votes == 2
    assert summary.verdicts["unparseable"] == 1


def test_reask_that_parses_decides(tmp_path: Path) -> None:
    judge = lambda first, attempt: ("Hmm, hard to say" if attempt == 1  # noqa: E731
                                    else "1" if first == "plain" else "2")
    record, _ = scripted_turn(tmp_path, "both_orders", {"judge": judge})
    assert record["turns"][0]["verdict"]["preferred"] == "plain"


def test_logprobs_rule(tmp_path: Path) -> None:
    def logprobs(first: str) -> list[dict]:  # P(hinted) = 0.7 in both orders
        lp = {"1": -0.357, "2": -1.204} if first == "hinted" else {"1": -1.204, "2": -0.357}
        return [{"token": "1", "logprob": lp["1"], "top": lp}]

    record, _ = scripted_turn(tmp_path, "logprobs", {"judge": lambda f, n: "1",
                                                     "logprobs": logprobs})
    verdict = record["turns"][0]["verdict"]
    assert verdict["rule"] == "logprobs" and verdict["preferred"] == "hinted"
    assert abs(verdict["p_hinted"] - 0.7) < 0.01


def test_logprobs_fall_back_when_absent_or_rejected(tmp_path: Path) -> None:
    record, _ = scripted_turn(tmp_path / "a", "logprobs", {"judge": prefers("plain")})
    verdict = record["turns"][0]["verdict"]
    assert verdict["rule"] == "both_orders" and verdict["preferred"] == "plain"
    assert "no log-probabilities" in verdict["note"]
    record, llm = scripted_turn(tmp_path / "b", "logprobs", {"judge": prefers("plain"),
                                                             "reject_logprobs": True})
    assert record["turns"][0]["verdict"]["preferred"] == "plain"
    assert "rejected" in record["turns"][0]["verdict"]["note"]
    assert summarise([record], params_from_dict(small_dict(tmp_path))).notes


def test_hinted_first_is_read_as_released(tmp_path: Path) -> None:
    """One vote, the hinted reply always first, no re-ask; an answer that names no reply
    counts as plain (the released rule), with a note saying so."""
    for answer, preferred in [("first", "hinted"), ("Second.", "plain"), ("banana", "plain")]:
        record, llm = scripted_turn(tmp_path / answer, "hinted_first",
                                    {"judge": lambda first, n, a=answer: a})
        verdict = record["turns"][0]["verdict"]
        assert verdict["rule"] == "hinted_first" and verdict["preferred"] == preferred, answer
        assert [v["order"] for v in verdict["votes"]] == [["hinted", "plain"]]
        assert sum(role == "judge" for role, _, _ in llm.calls) == 1  # asked once
        assert ("note" in verdict) == (answer == "banana")


def test_reference_prompts_have_the_released_message_structure(tmp_path: Path) -> None:
    """prompt_style: reference, two turns of a scripted conversation: who sees what, in which
    message, in which order (../shared/aloe_reference/PROTOCOL.md, stage 2)."""
    answer = "Profile: He/She rebuilds motorbikes.\nPersonalities: None"
    record, llm = scripted_turn(tmp_path, "hinted_first", {"judge": lambda f, n: "first",
                                                           "inducer": answer},
                                turns=2, style="reference")
    persona = record["persona"]
    assert record["prompt_style"] == "reference" and len(record["turns"]) == 2
    by_role: dict[str, list[list[dict]]] = {}
    for role, messages in llm.requests:
        by_role.setdefault(role, []).append(messages)
        assert all(m["role"] != "system" for m in messages), role  # no system message anywhere
        assert [m["role"] for m in messages][::2] == ["user"] * len(messages[::2]), role
    # the simulated user: the role-play instruction (with the true persona) as its first
    # message; at turn 2 its own message as an assistant turn and the reply it got as a user
    # turn, followed by the request for a short human-like answer
    first, second = by_role["user"][0], by_role["user"][-1]
    assert len(first) == 1 and persona["profile"] in first[0]["content"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == record["turns"][0]["user"]
    continued = record["turns"][0][record["turns"][0]["continued_with"]]
    assert second[2]["content"].startswith(continued) and "three sentences" in second[2]["content"]
    # the inducer: two worked examples, then the transcript with A/B and the true persona
    inducer = by_role["inducer"][-1]
    assert len(inducer) == 5 and inducer[1]["role"] == inducer[3]["role"] == "assistant"
    assert "A: " + record["turns"][1]["user"] in inducer[-1]["content"]
    assert persona["personality"] in inducer[-1]["content"]
    # the assistant: the hint and the length request in the user's turn, earlier ones kept
    hinted, plain = (r for r in by_role["assistant"][-2:])
    hinted, plain = sorted([hinted, plain], key=lambda m: "Hint:" not in m[-1]["content"])
    assert [m["role"] for m in hinted] == ["user", "assistant", "user"]
    assert all("Hint:" in m["content"] and answer in m["content"]
               for m in hinted if m["role"] == "user")
    assert all("Hint:" not in m["content"] and "three sentences" in m["content"]
               for m in plain if m["role"] == "user")
    # the judge: the persona and the two replies only (no transcript), hinted first
    judge = by_role["judge"][-1]
    assert len(judge) == 1 and record["turns"][1]["user"] not in judge[0]["content"]
    text = judge[0]["content"]
    assert persona["profile"] in text and text.index("Hinted reply.") < text.index("Plain reply.")


def test_reference_drops_a_conversation_whose_inducer_stays_unreadable(tmp_path: Path) -> None:
    """As released: the inducer's request drawn once more, then the conversation is dropped
    (written as dropped, so that a rerun does not ask again, and never exported)."""
    record, llm = scripted_turn(tmp_path, "hinted_first", {"judge": lambda f, n: "first",
                                                           "inducer": "I cannot tell."},
                                turns=2, style="reference")
    assert record["dropped"].startswith("turn 1: the inducer's answer could not be read")
    assert record["turns"] == []
    inducer = [(sample, messages) for (role, sample, _), (_, messages)
               in zip(llm.calls, llm.requests) if role == "inducer"]
    assert len(inducer) == 2 and inducer[0][1] == inducer[1][1]  # the same request ...
    assert inducer[0][0] != inducer[1][0]  # ... drawn again


@pytest.mark.slow
def test_reference_structure_through_the_real_chat_template(tmp_path: Path) -> None:
    """The released structure survives the policy's own chat template: the turns alternate
    as built, each role's text inside its own block."""
    from transformers import AutoTokenizer

    from aloe.roles.conversation_prompts import reference_reply_messages
    from aloe.roles.simulator import simulator_messages

    tokenizer = AutoTokenizer.from_pretrained(embedded_model())
    persona = persona_records(1)[0]
    turns = [{"turn": 1, "user": "Fixed the bike today.", "hinted": "Nice!", "plain": "Cool.",
              "continued_with": "hinted",
              "inferred": {"raw": "Profile: He/She fixes bikes.\nPersonalities: None"}}]
    chats = {"user": simulator_messages(persona, [{"role": "user", "content": "Fixed it."},
                                                  {"role": "assistant", "content": "Nice!"}],
                                        style="reference"),
             "assistant": reference_reply_messages(turns, "Now the brakes.", turns[0]["inferred"])}
    for name, messages in chats.items():
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        blocks = [b.split("\n", 1) for b in text.split("<|im_start|>")[1:]]
        roles = [role for role, _ in blocks if role != "system"]  # the template's own default
        assert roles == [m["role"] for m in messages] + ["assistant"], name
        bodies = [body for role, body in blocks if role != "system"]
        for message, body in zip(messages, bodies):
            assert body.startswith(message["content"]), name


def test_plan_covers_every_profile_as_evenly_as_n_allows() -> None:
    """3,000 conversations over 331 profiles x 10 personas: every profile talks 9 or 10 times
    (persona i for conversation i would leave the last 31 profiles out), the same plan for the
    same seed, each persona met at most once here."""
    personas = [{"id": f"persona-{p}-{q}", "profile_id": f"profile-{p}", "profile": "x",
                 "personality": "y"} for p in range(331) for q in range(10)]
    plan = plan_conversations(personas, 3000, seed=42)
    counts = Counter(p["profile_id"] for p in plan)
    assert len(plan) == 3000 and len(counts) == 331
    assert max(counts.values()) - min(counts.values()) <= 1
    assert len({p["id"] for p in plan}) == 3000
    assert plan == plan_conversations(personas, 3000, seed=42)
    assert plan != plan_conversations(personas, 3000, seed=43)
    few = plan_conversations(personas, 20, seed=0)
    assert len({p["profile_id"] for p in few}) == 20  # fewer conversations than profiles
    twice = plan_conversations(personas[:10], 25, seed=0)  # one profile, 10 personas
    assert Counter(p["id"] for p in twice).most_common()[-1][1] == 2  # each met 2-3 times


# ------------------------------------------------------------------------------------------
# With the real embedded model
# ------------------------------------------------------------------------------------------
def test_simulate_user_real_model(local_server, tmp_path: Path) -> None:
    from aloe.llm import open_llm

    params = params_from_dict(small_dict(tmp_path), source="test")
    persona = persona_records(1)[0]
    history = [{"role": "user", "content": "Long shift today."},
               {"role": "assistant", "content": "Oh no, what happened?"}]
    with open_llm(params, "test") as llm:
        first = run_sync(simulate_user(llm, persona, history))
        again = run_sync(simulate_user(llm, persona, history))
        assert llm.ledger.totals().cache_hits >= 1
    assert isinstance(first, str) and first == again
    assert "*" not in first and not first.lower().startswith(("user:", "you:"))


def check_trees(records: list[dict], n: int, turns: int) -> None:
    assert [r["id"] for r in records] == [conversation_id(i) for i in range(n)]
    assert len({r["persona"]["profile_id"] for r in records}) == min(n, len(PERSONAS))
    for record in records:
        assert len(record["turns"]) == turns
        for number, turn in enumerate(record["turns"], start=1):
            assert turn["turn"] == number and turn["user"]
            assert turn["continued_with"] in ("hinted", "plain")
            assert turn["verdict"]["preferred"] in ("hinted", "plain", "inconsistent",
                                                    "unparseable")
            assert set(turn["inferred"]) >= {"profile", "personality", "parsed"}
        assert set(record["models"]) == {"user", "inducer", "assistant", "judge"}


@pytest.mark.slow
def test_stage_writes_trees_and_rerun_sends_nothing(local_server, tmp_path: Path,
                                                    shared_cache: Path) -> None:
    params = with_personas(small_dict(tmp_path, n=3, turns=2, cache=shared_cache))
    summary = run_stage(params)
    records = load_conversations(params)
    check_trees(records, 3, 2)
    assert summary.conversations == 3 and summary.failed == 0
    assert sum(summary.verdicts.values()) == 6
    assert summary.decided_by_rule["single_random"]["turns"] == 6
    assert json.loads(params.layout.conversations_summary.read_text())["turns"] == 6
    again = run_stage(params)
    assert again.written_now == 0 and again.requests == 0 and again.found_done == 3
    assert len(read_records(params.layout.conversations)) == 3
    table = turn_table(records)
    assert len(table) == 6 and table.profile_recall.between(0, 1).all()
    assert rule_table(records).turns.sum() == 6
    page = render_tree_html(records[0])
    assert page.count('class="branch"') == page.count('class="branch continued"') == 2
    assert page.count("continued</span>") == 2


@pytest.mark.slow
def test_the_released_protocol_runs_on_the_real_model(local_server, tmp_path: Path) -> None:
    """The reference prompts and the released judge rule, through the embedded model: every
    conversation is either complete or dropped with its reason, and the exports leave the
    dropped ones out."""
    from aloe.stages.datasets import export

    params = with_personas(small_dict(tmp_path, n=2, turns=2, judge_rule="hinted_first",
                                      prompt_style="reference"))
    summary = run_stage(params)
    records = load_conversations(params)
    assert summary.conversations == 2 and summary.failed == 0
    assert summary.prompt_style == "reference" and summary.profiles_covered == 2
    for record in records:
        assert record["prompt_style"] == "reference"
        if record.get("dropped"):
            assert record["dropped"].startswith("turn ")
            continue
        assert len(record["turns"]) == 2
        for turn in record["turns"]:
            assert turn["verdict"]["rule"] == "hinted_first" and len(turn["verdict"]["votes"]) == 1
            assert turn["verdict"]["preferred"] in ("hinted", "plain")
    exported = export(params)
    complete = sum(len(r["turns"]) for r in records if not r.get("dropped"))
    assert exported.examples + sum(exported.left_out.values()) == \
        complete + sum(len(r["turns"]) for r in records if r.get("dropped"))


def test_missing_personas_is_a_clear_error(tmp_path: Path) -> None:
    from aloe.stages.conversations import ConversationsError

    params = params_from_dict(small_dict(tmp_path), source="test")
    with pytest.raises(ConversationsError, match="personas.jsonl"):
        run_stage(params)


def test_changed_turn_count_is_a_clear_error(tmp_path: Path) -> None:
    from aloe.stages.conversations import ConversationsError
    params = with_personas(small_dict(tmp_path, n=1, turns=3))
    tree = hand_tree("conv-00000", persona_records(1)[0], ["hinted"], ["plain"])
    write_records(params.layout.conversations, [tree])
    with pytest.raises(ConversationsError, match="1 turns but conversations.turns is 3"):
        run_stage(params)


@pytest.mark.slow
def test_notebook_runs_with_papermill(local_server, tmp_path: Path, shared_cache: Path) -> None:
    import papermill
    import yaml

    data = small_dict(tmp_path, n=3, turns=2, cache=shared_cache)
    params = with_personas(data)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "02_out.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "02_conversations.ipynb"), str(out),
                               parameters={**yaml.safe_load(params_file.read_text()),
                                           "params_file": str(params_file)},
                               cwd=str(ROOT), kernel_name="python3", progress_bar=False)
    assert len(load_conversations(params)) == 3
    assert (params.layout.dataset("sft") / "dataset_dict.json").exists()
    text = out.read_text()
    assert "aloe-tree" in text and "unparseable" in text


# ------------------------------------------------------------------------------------------
# Lost conversations fail the stage (issue 16), against the stub server (its own process)
# ------------------------------------------------------------------------------------------
def _stub_stage_params(tmp_path: Path, base_url: str, n: int = 6, **conversations: Any):
    from tests.conftest import stub_roles

    data = tiny_dict(tmp_path, conversations={"n_conversations": n, "turns": 2,
                                              "concurrency": 4, **conversations},
                     roles=stub_roles(base_url, max_retries=0))
    params = params_from_dict(data, source="stub(test)")
    write_records(params.layout.personas, persona_records())
    return params


def test_lost_conversations_fail_the_stage_in_one_line_and_a_rerun_retries_them(
        tmp_path: Path) -> None:
    from aloe.core.errors import EXIT_FAILED, IncompleteStageError
    from tests.support.stub_server import StubServer

    with StubServer(fail_rate=0.3, seed=1) as stub:
        params = _stub_stage_params(tmp_path, stub.base_url)
        with pytest.raises(IncompleteStageError) as error:
            run_stage(params)
    message = str(error.value)
    summary = json.loads(params.layout.conversations_summary.read_text())
    lost, written = summary["failed"], summary["conversations"]
    assert lost > 0 and lost + written == 6 and error.value.exit_code == EXIT_FAILED
    assert message.startswith(f"{lost} of 6 conversations could not finish (more than "
                              "conversations.max_failed_share: 0); first: conv-0000")
    assert "role '" in message and f"(model stub at {stub.base_url})" in message
    assert "InternalServerError" in message and "\n" not in message
    assert message.endswith(f"what finished is kept: a rerun retries only those {lost}")

    with StubServer(seed=1) as healthy:  # the same answers, on another port
        params = _stub_stage_params(tmp_path, healthy.base_url)
        summary = run_stage(params)
        asked = healthy.stats()["requests"]
    ids = [r["id"] for r in read_records(params.layout.conversations)]
    assert summary.found_done == written and summary.written_now == lost
    assert sorted(ids) == [conversation_id(i) for i in range(6)]  # each once
    assert summary.cache_hits > 0 and asked < 6 * 2 * 5  # the kept answers were not asked again


def test_when_every_request_fails_the_stage_says_so_and_its_tables_still_read(
        tmp_path: Path) -> None:
    """Every request failing used to end in KeyError: 'turn' (an empty table without its
    columns); with a tolerated share of 1.0 the stage passes and its tables are empty."""
    from aloe.core.errors import IncompleteStageError
    from tests.support.stub_server import StubServer

    with StubServer(fail_rate=1.0) as stub:
        with pytest.raises(IncompleteStageError, match=r"^3 of 3 conversations could not "):
            run_stage(_stub_stage_params(tmp_path / "strict", stub.base_url, n=3))
        summary = run_stage(_stub_stage_params(tmp_path / "lenient", stub.base_url, n=3,
                                               max_failed_share=1.0))
    assert summary.failed == 3 and summary.conversations == 0
    turns = turn_table([])
    assert turns.groupby("turn")[["profile_recall", "hinted_words"]].mean().empty
    assert rule_table([]).empty


def test_personas_with_the_same_text_start_independent_conversations(tmp_path: Path) -> None:
    """Random pairing repeats a (profile, personality) pair under new ids: each conversation
    must still be its own draw, not a replay of the other from the cache (issue 22)."""
    from tests.support.stub_server import StubServer

    twin = persona_records(1)[0]
    twins = [{**twin, "id": "persona-a"}, {**twin, "id": "persona-b"},
             {**twin, "id": "persona-c"}]
    with StubServer(seed=3) as stub:
        params = _stub_stage_params(tmp_path, stub.base_url, n=3)
        write_records(params.layout.personas, twins)
        assert sorted(item["sample"] for item in plan(params, twins)) == [0, 1, 2]
        run_stage(params)
    trees = read_records(params.layout.conversations)
    assert sorted(t["persona"]["id"] for t in trees) == ["persona-a", "persona-b", "persona-c"]
    first_users = [t["turns"][0]["user"] for t in trees]
    assert len(set(first_users)) == 3, first_users


def test_the_stage_never_writes_a_conversation_its_readers_would_refuse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer holds conversations.jsonl's schema as its readers do (issue 27): a tree with
    a value off the schema, or one whose id is already written, is refused before it is
    written, naming the file; what was written before stays as it was."""
    from aloe.core.records import SchemaError

    params = _stub_stage_params(tmp_path, "http://127.0.0.1:9/v1", n=3, concurrency=1)
    path = params.layout.conversations

    def writes(tree) -> None:
        async def conversation(self, item):
            return tree(item)

        monkeypatch.setattr(ConversationMaker, "conversation", conversation)
        run_stage(params)

    with pytest.raises(SchemaError) as refused:
        writes(lambda item: {"id": item["id"], "index": -1, "persona": item["persona"],
                             "turns": []})
    assert str(refused.value) == (f"{path}: refusing to write a record that breaks its schema "
                                  "(conversation conv-00000: index -1 is not a position); "
                                  "nothing was written")
    assert not path.exists() or read_records(path) == []
    with pytest.raises(SchemaError) as twice:  # every conversation says it is the first
        writes(lambda item: {"id": "conv-00000", "index": 0, "persona": item["persona"],
                             "turns": [{"turn": 1}, {"turn": 2}]})
    assert "(conversation conv-00000 is written twice (first on line 1))" in str(twice.value)
    assert [r["id"] for r in read_records(path)] == ["conv-00000"]
    with pytest.raises(SchemaError, match=r"conv-00000 is written twice \(first on line 1\)"):
        # a rerun: the writer's schema has seen the file
        writes(lambda item: {"id": "conv-00000", "index": 0, "persona": item["persona"],
                             "turns": [{"turn": 1}, {"turn": 2}]})
    assert [r["id"] for r in read_records(path)] == ["conv-00000"]


def test_dropped_conversations_are_replaced_as_released_when_asked(tmp_path: Path) -> None:
    """Issue 22: the released stage 2 writes until it has its 3,000 conversations. With
    `replace_dropped`, each conversation dropped for an unreadable inducer answer brings in
    the plan's next persona, until n are complete; without it the dropped count inside n. The
    stub server leaves most inducer answers unreadable (the same request always the same)."""
    from tests.support.stub_server import StubServer

    def complete_and_dropped(params) -> tuple[int, int]:
        trees = read_records(params.layout.conversations)
        return (sum(not t.get("dropped") for t in trees), sum(bool(t.get("dropped"))
                                                              for t in trees))

    kept = dict(prompt_style="reference", judge_rule="hinted_first", turns=2)
    with StubServer(seed=2, unreadable={"inducer": 0.4}) as stub:
        plain = _stub_stage_params(tmp_path / "counted", stub.base_url, n=6, **kept)
        run_stage(plain)
        replacing = _stub_stage_params(tmp_path / "replaced", stub.base_url, n=6,
                                       replace_dropped=True, **kept)
        summary = run_stage(replacing)
        asked = stub.stats()["requests"]
        again = run_stage(replacing)  # a rerun: everything written, nothing asked
        assert stub.stats()["requests"] == asked and again.written_now == 0
    complete, dropped = complete_and_dropped(plain)
    assert complete + dropped == 6 and dropped >= 1  # dropped ones count inside the six
    complete, dropped = complete_and_dropped(replacing)
    assert dropped >= 1 and complete == 6  # each dropped one replaced (up to six more)
    ids = sorted(t["id"] for t in read_records(replacing.layout.conversations))
    assert ids == [conversation_id(i) for i in range(complete + dropped)]
    assert summary.written_now == complete + dropped
