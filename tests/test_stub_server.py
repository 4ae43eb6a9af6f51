"""The OpenAI-protocol stub server (tests/support/stub_server.py): every role gets a reply the
project's own parsers accept, replies are deterministic, log-probabilities parse in the openai
client, HTTP/1.1 keep-alive and pipelining work, and the process never outlives its owner.

Prompts are rendered from the project's templates (src/aloe/prompts/*.txt) with
string.Template, so a change of wording there is exercised here too.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from tests.support.stub_server import StubServer, classify

ROOT = Path(__file__).resolve().parents[1]
# the parsers may move during a refactor: the first module that has the name wins
PARSER_HOMES = ("aloe.roles.judges", "aloe.core.protocols.aloe", "aloe.stages.personas.parse",
                "aloe.stages.conversations", "aloe.stages.evaluation", "aloe.stages.personas",
                "aloe.roles.simulator")
PROFILE = ("She is a 29-year-old night-shift nurse in Leeds. She shares a flat with her brother "
           "and grows tomatoes on her balcony.")
PERSONALITY = "She is cheerful and chatty. She is a little impatient. She is practical."
HISTORY = [{"role": "user", "content": "long day at the hospital, my feet hurt"},
           {"role": "assistant", "content": "Oh no! Was it a busy shift?"},
           {"role": "user", "content": "yeah. all i want now is my tomatoes and a cup of tea"}]


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------
def parser(name: str) -> Callable[..., Any]:
    """A project parser by name, wherever the refactor has put it."""
    for home in PARSER_HOMES:
        try:
            module = importlib.import_module(home)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"no parser {name} in any of {PARSER_HOMES}")


def prompts_dir() -> Path:
    try:
        import aloe.prompts

        return Path(aloe.prompts.__file__).parent
    except ImportError:
        return ROOT / "src" / "aloe" / "prompts"


def render(name: str, **fields: object) -> str:
    text = (prompts_dir() / f"{name}.txt").read_text(encoding="utf-8")
    return string.Template(text).substitute({k: str(v) for k, v in fields.items()}).strip()


def seeds(kind: str, k: int = 3) -> str:
    path = prompts_dir().parent / "stages" / "seeds" / f"{kind}.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return "\n".join(lines[:k])


def transcript(history: list[dict[str, str]], me: str = "User") -> str:
    return "\n".join(f"{me if m['role'] == 'user' else 'Assistant'}: {m['content']}"
                     for m in history)


def worked_example(template: str) -> tuple[str, str]:
    """The worked example shown before an annotator's question: (question, answer). Read from
    `examples/TEMPLATE.json` (rendered through the template) or the older `TASK_example.txt`
    and `TASK_example_answer.txt` files, whichever this tree has."""
    folder = prompts_dir()
    found = folder / "examples" / f"{template}.json"
    if found.exists():
        data = json.loads(found.read_text(encoding="utf-8"))
        fields = dict(data["fields"])
        if isinstance(fields.get("transcript"), list):
            fields["transcript"] = transcript(fields["transcript"])
        return render(template, **fields), data["answer"]
    task = template.split("_", 1)[0]
    return render(f"{task}_example"), render(f"{task}_example_answer")


def annotator(template: str, **fields: object) -> list[dict[str, str]]:
    question, answer = worked_example(template)
    return [{"role": "system", "content": render("annotator_system")},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": render(template, **fields)}]


def role_requests() -> dict[str, list[list[dict[str, str]]]]:
    """Requests like the stages', by the role the stub should recognise."""
    simulator_system = render("user_simulator", profile=PROFILE, personality=PERSONALITY)
    induce = annotator("induce_persona", profile=PROFILE, personality=PERSONALITY,
                       transcript=transcript(HISTORY))
    prefer = annotator("judge_preference", profile=PROFILE, personality=PERSONALITY,
                       transcript=transcript(HISTORY), reply_1="Sounds tiring! Tea first?",
                       reply_2="Here are ten tips for managing stress at work.")
    score = [{"role": "user", "content": render(
        "judge_score", profile=PROFILE, personality=PERSONALITY, transcript=transcript(HISTORY),
        reply="Sounds tiring! Tea first, then the tomatoes?")}]
    return {
        "generator": [
            [{"role": "user", "content": render("generate_profiles", n=5,
                                                examples=seeds("profiles"))}],
            [{"role": "user", "content": render("generate_personalities", n=4,
                                                examples=seeds("personalities"))}]],
        "user": [
            [{"role": "system", "content": simulator_system},
             {"role": "user", "content": render("user_simulator_start")}],
            [{"role": "system", "content": simulator_system},
             {"role": "user", "content": render("user_simulator_turn",
                                                transcript=transcript(HISTORY, "You"))}]],
        "inducer": [
            induce,
            induce + [
                {"role": "assistant", "content": "Hmm, hard to say."},
                {"role": "user", "content": render("induce_persona_reask")}]],
        "judge_preference": [
            prefer,
            prefer + [
                {"role": "assistant", "content": "Both are fine."},
                {"role": "user", "content": render("judge_preference_reask")}]],
        "judge_score": [
            score,
            score + [{"role": "assistant", "content": "It is decent."},
                     {"role": "user", "content": render("judge_score_reask")}]],
        "assistant": [
            [{"role": "system", "content": render("assistant_plain")}, *HISTORY],
            [{"role": "system", "content": render("assistant_hinted", profile="works shifts",
                                                  personality="terse")}, *HISTORY]],
    }


async def ask(base_url: str, messages: list[dict[str, str]], **extra: Any) -> tuple[str, Any]:
    """(role header, parsed completion) through the real openai client."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="stub", messages=messages, seed=extra.pop("seed", 1234),  # type: ignore
            temperature=0.7, max_tokens=256, **extra)
        return raw.headers.get("x-stub-role", ""), raw.parse()
    finally:
        await client.close()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer(seed=0) as server:
        yield server


# ------------------------------------------------------------------------------------------
# Roles
# ------------------------------------------------------------------------------------------
def test_every_role_is_recognised_and_parses(stub: StubServer) -> None:
    parse_reply, parse_inferred = parser("parse_reply"), parser("parse_inferred")
    parse_choice, parse_score = parser("parse_choice"), parser("parse_score")

    async def all_roles() -> list[tuple[str, str, Any]]:
        jobs = [(role, ask(stub.base_url, messages))
                for role, requests in role_requests().items() for messages in requests]
        answers = await asyncio.gather(*(job for _, job in jobs))
        return [(role, header, completion) for (role, _), (header, completion)
                in zip(jobs, answers)]

    for role, header, completion in asyncio.run(all_roles()):
        text = completion.choices[0].message.content
        assert header == role, (role, text)
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage.prompt_tokens > 10 and completion.usage.completion_tokens >= 1
        if role == "generator":
            items = parse_reply(text, "stop").items
            assert len(items) in (4, 5) and len(set(items)) == len(items)
            assert all(i.startswith(("He is", "She is")) and len(i.split()) >= 8 for i in items)
        elif role == "user":
            words = {w.strip(".,!?").lower() for w in text.split()}
            assert words & {"i", "my", "i'm", "i've"}, text
            assert not text.lower().startswith(("user:", "you:"))
        elif role == "inducer":
            inferred = parse_inferred(text)
            assert inferred is not None and set(inferred) == {"profile", "personality"}
        elif role == "judge_preference":
            assert parse_choice(text) in (1, 2)
        elif role == "judge_score":
            assert parse_score(text) in (1, 2, 3, 4, 5)
        else:
            assert 1 <= text.count(".") + text.count("!") + text.count("?") <= 4, text
            assert classify([{"role": "user", "content": text}]) == "assistant"


def test_generator_count_and_kind(stub: StubServer) -> None:
    parse_reply = parser("parse_reply")
    prompt = render("generate_profiles", n=20, examples=seeds("profiles"))
    _, completion = asyncio.run(ask(stub.base_url, [{"role": "user", "content": prompt}]))
    items = parse_reply(completion.choices[0].message.content, "stop").items
    assert len(items) == 20
    assert all("-year-old" in i or i.split()[2].rstrip(",").isdigit() for i in items)
    prompt = render("generate_personalities", n=6, examples=seeds("personalities"))
    _, completion = asyncio.run(ask(stub.base_url, [{"role": "user", "content": prompt}]))
    items = parse_reply(completion.choices[0].message.content, "stop").items
    assert len(items) == 6 and not any(ch.isdigit() for ch in "".join(items))


def test_preflight_word(stub: StubServer) -> None:
    messages = [{"role": "user", "content": "Reply with the word: ready"}]
    header, completion = asyncio.run(ask(stub.base_url, messages))
    assert header == "assistant" and completion.choices[0].message.content == "ready"


def test_replies_are_deterministic(stub: StubServer) -> None:
    messages = role_requests()["generator"][0]

    async def three() -> list[Any]:
        return [await ask(stub.base_url, messages, seed=s) for s in (7, 7, 8)]

    (_, first), (_, again), (_, other) = asyncio.run(three())
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.id == again.id
    assert first.choices[0].message.content != other.choices[0].message.content
    with StubServer(seed=0) as twin:  # another process, the same seed: the same reply
        _, replay = asyncio.run(ask(twin.base_url, messages, seed=7))
    assert replay.choices[0].message.content == first.choices[0].message.content


def test_logprobs_parse_in_the_openai_client(stub: StubServer) -> None:
    messages = role_requests()["judge_preference"][0]
    _, completion = asyncio.run(ask(stub.base_url, messages, logprobs=True, top_logprobs=5))
    text = completion.choices[0].message.content
    tokens = completion.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == text
    first = tokens[0]
    assert first.token == text and first.logprob < 0 and first.bytes == list(text.encode())
    top = {t.token: t.logprob for t in first.top_logprobs}
    assert len(top) == 5 and {"1", "2"} <= set(top) and top[text] == max(top.values())
    _, plain = asyncio.run(ask(stub.base_url, messages))
    assert plain.choices[0].logprobs is None
    messages = role_requests()["assistant"][0]
    _, completion = asyncio.run(ask(stub.base_url, messages, logprobs=True, top_logprobs=3))
    tokens = completion.choices[0].logprobs.content
    assert len(tokens) > 3 and all(len(t.top_logprobs) == 3 for t in tokens)


# ------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------
def _raw_request(body: bytes) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, Any]]]:
    data, answers = b"", []
    while len(answers) < count:
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                break
            answers.append((int(head.split(b" ")[1]), json.loads(rest[:length])))
            data = rest[length:]
    return answers


@pytest.mark.parametrize("latency_s", [0.0, 0.05])
def test_pipelined_requests_are_answered_in_order(latency_s: float) -> None:
    bodies = [json.dumps({"model": "m", "seed": i, "messages": [
        {"role": "user", "content": f"Reply with the word: w{'x' * i}"}]}).encode()
        for i in range(5)]
    with StubServer(latency_s=latency_s) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"".join(_raw_request(b) for b in bodies))  # all at once
        answers = _read_responses(sock, len(bodies))
    assert [status for status, _ in answers] == [200] * 5
    assert [a["choices"][0]["message"]["content"] for _, a in answers] == \
        [f"w{'x' * i}" for i in range(5)]


def test_health_models_errors_and_latency() -> None:
    with StubServer(latency_s=0.2, fail_rate=1.0, model="tiny-stub") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny-stub"]
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert server.stats()["failures"] == 1
        with pytest.raises(openai.NotFoundError):
            client.post("/nowhere", cast_to=object, body={})
    with StubServer(latency_s=0.2) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        started = time.perf_counter()
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert time.perf_counter() - started >= 0.2


def test_fail_rate_is_a_share() -> None:
    with StubServer(fail_rate=0.3, seed=3) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        failed = 0
        for _ in range(200):
            try:
                client.chat.completions.create(model="m",
                                               messages=[{"role": "user", "content": "hi"}])
            except openai.InternalServerError:
                failed += 1
        assert 30 <= failed <= 90 and server.stats()["failures"] == failed


# ------------------------------------------------------------------------------------------
# The process
# ------------------------------------------------------------------------------------------
def test_process_is_gone_after_the_with_block() -> None:
    with StubServer() as server:
        pid = server.pid
        assert pid is not None and not gone(pid)
    assert gone(pid)


PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from tests.support.stub_server import StubServer
stub = StubServer().start()
print(stub.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("in_thread", [False, True])
def test_child_dies_with_a_killed_parent(in_thread: bool) -> None:
    """SIGKILL leaves the parent no chance to clean up; the stub must go by itself (from a
    worker thread only the pid polling applies, so that path is tested too)."""
    code = PARENT.format(root=str(ROOT))
    if in_thread:
        code = code.replace("stub = StubServer().start()",
                            "import threading\nbox = []\nt = threading.Thread("
                            "target=lambda: box.append(StubServer().start()))\nt.start()\n"
                            "t.join()\nstub = box[0]")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert not gone(pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(pid), "the stub outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()  # type: ignore[union-attr]


def test_the_judges_and_probe_beyond_the_paper(stub: StubServer) -> None:
    """RLPA's 1/0 judge, the 0-10 and yes/no measuring judges and the inference probe get
    replies their parsers read (their prompts are the project's own templates)."""
    from aloe.core.protocols.rlpa import parse_binary
    from aloe.roles.judges import parse_ten, parse_yes_no

    persona = {"profile": PROFILE, "personality": PERSONALITY}
    requests = {
        "judge_binary": render("judge_rlpa", transcript="You: hi", message="hi", reply="hello",
                               **persona),
        "judge_ten": render("judge_inference", statement="You are a nurse.", **persona),
        "judge_yes_no": render("judge_contradiction", earlier="- hi", message="I'm a pilot",
                               shift_note="", **persona),
        "probe": render("probe_inference")}
    requests["judge_ten_revealed"] = render("judge_revealed", messages="- hi", **persona)
    for role, prompt in requests.items():
        for seed in range(4):
            header, completion = asyncio.run(ask(stub.base_url,
                                                 [{"role": "user", "content": prompt}],
                                                 seed=seed))
            text = completion.choices[0].message.content
            assert header == role.replace("_revealed", ""), (role, text)
            if role == "judge_binary":
                assert parse_binary(text) in (0, 1), text
            elif role.startswith("judge_ten"):
                assert parse_ten(text) in range(11), text
            elif role == "judge_yes_no":
                assert parse_yes_no(text) in (True, False), text
            else:
                assert text.startswith("You ") and classify(
                    [{"role": "user", "content": text}]) == "assistant"
