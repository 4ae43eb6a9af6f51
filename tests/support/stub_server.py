"""A fast OpenAI-protocol stub server (test code): valid, deterministic replies for every role.

Why it exists: the stages must be driven at paper scale (hundreds of thousands of requests) to
test and benchmark the CLIENT side (concurrency, retries, cache, ledger) without a model. A
real server is far too slow for that, and an in-process fake would share the client's event
loop. So the stub is a separate process, a hand-written asyncio HTTP/1.1 server (keep-alive,
pipelining-safe: the requests of one connection are answered in order) on 127.0.0.1, and
thousands of requests per second on one core are cheap for it.

    with StubServer(seed=0, latency_s=0.0) as stub:
        client = openai.AsyncOpenAI(base_url=stub.base_url, api_key="x")

or on its own: `python -m tests.support.stub_server --port 8000 [--latency-s 0.05]`.

Endpoints: `GET /health` (200), `GET /v1/models`, `GET /stats` (requests per role, failures),
`POST /v1/chat/completions` (non-streaming; one choice; `usage`; `logprobs` with
`top_logprobs` in OpenAI's shape when asked for). The role is also named in the `X-Stub-Role`
response header.

Which role asked is decided from the request's text with keyword rules (`classify`): first the
system message (role-play cues: the user simulator; "you are a ... assistant": the assistant),
then the instruction at the END of the last user message (the last `TAIL` characters, where
every template puts its question), in this order:

- preference judge: "1 or 2"  -> "1" or "2"
- binary judge (RLPA's protocol): "verdict"  -> a short reason, then "Verdict: 1" or "0"
- 0-10 judges (inference accuracy, the simulator's disclosure): "from 0 to 10"  -> "0".."10"
- yes/no judge (the simulator's contradictions): "yes or no"  -> "yes" or "no"
- score judge: "score"/"rating" with a 1..5 scale  -> one digit 1-5
- the inference probe: "what have you learned about me"  -> a sentence about the user
- persona inducer: answer lines "Profile:" and "Personality:"  -> those two lines
- persona generator: "write N new ... profiles/personalities/descriptions" at the start, or
  'starting with "He is" or "She is"'  -> N paragraphs, one per line, each "He is"/"She is"
  with a combination of age, job, city, family, hobbies (or 6-8 traits) drawn for this request
- user simulator: "your first/next message", "in character"  -> 1-2 casual first-person lines
- "reply with the word: X" (the preflight check)  -> X
- anything else, the assistant  -> one to three friendly sentences.

The texts the stub itself writes (user messages, assistant replies) never contain those cues,
so transcripts quoted inside later prompts do not mislead the rules.

Replies are a pure function of (canonical JSON body, stub seed): the same request always gets
the same reply, so a response cache or a resumed run sees consistent answers, while requests
that differ in their `seed` (the client's sample index) get different ones. Knobs for drills:
`latency_s` (an asyncio sleep before each chat reply), `fail_rate` (that share of chat
requests answered 500, drawn from one RNG seeded with the stub seed, in arrival order, so a
retry of a failed request can succeed), `unreadable` (role -> share: that share of the role's
answers carry nothing to read, e.g. the persona inducer's without its answer lines, a score
judge's without a score; drawn from the request's own RNG: the same request always gets the same
answer, another draw of it may be readable) and `fail_roles` (every request of those roles
answered 500: a role that is down while the others answer).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

try:  # a faster JSON codec when the environment has one
    import orjson

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def _canonical(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
except ImportError:
    import json

    _ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    _SORTED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    def _loads(data: bytes) -> Any:
        return json.loads(data)

    def _dumps(value: Any) -> bytes:
        return _ENCODER.encode(value).encode()

    def _canonical(value: Any) -> bytes:
        return _SORTED.encode(value).encode()

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("generator", "user", "inducer", "judge_preference", "judge_score", "assistant",
         "judge_binary", "judge_ten", "judge_yes_no", "probe")
TAIL = 320  # characters at the end of the last user message that hold the instruction
MAX_HEAD = 64 * 1024  # request line and headers
MAX_BODY = 16 * 1024 * 1024
Message = dict[str, Any]


# ==========================================================================================
# Which role asked
# ==========================================================================================
_ROLE_PLAY = re.compile(r"role[- ]?play|in character|pretend(?:ing)? to be|you are playing",
                        re.IGNORECASE)
_ASSISTANT_SYSTEM = re.compile(r"\byou are (?:a|an|the)\s+(?:[\w-]+,?\s+){0,4}assistant\b",
                               re.IGNORECASE)
_ANNOTATOR = re.compile(r"annotat|judg|evaluat|grader|rater", re.IGNORECASE)
_PREFERENCE = re.compile(r"\b1\s+or\s+2\b|\b(?:reply|response|option)\s+1\s+or\s+(?:reply|"
                         r"response|option)?\s*2\b", re.IGNORECASE)
_BINARY = re.compile(r"\bverdict\b", re.IGNORECASE)
_TEN = re.compile(r"\bfrom\s+0\s+to\s+10\b", re.IGNORECASE)
_YES_NO = re.compile(r"\byes\s+or\s+no\b", re.IGNORECASE)
_PROBE = re.compile(r"\bwhat have you learned about me\b", re.IGNORECASE)
_SCORE_WORD = re.compile(r"\b(?:score|rating|rate|grade)\b", re.IGNORECASE)
_SCALE = re.compile(r"\b1\b.{0,40}\b5\b|\b1\s*(?:-|to)\s*5\b|\bone to five\b",
                    re.IGNORECASE | re.DOTALL)
_INDUCE_PROFILE = re.compile(r"^\W*profile\s*(?:\([^)]*\))?\s*:", re.IGNORECASE | re.MULTILINE)
_INDUCE_PERSONALITY = re.compile(r"^\W*personalit(?:y|ies)\s*(?:\([^)]*\))?\s*:",
                                 re.IGNORECASE | re.MULTILINE)
_GENERATE = re.compile(
    r"\b(?:write|generate|create|produce|give|list|invent|make)\b\s+(?:me\s+)?"
    r"(\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten|twenty)\s+"
    r"(?:[\w'-]+\s+){0,4}?(profiles?|personalit(?:y|ies)|descriptions?|personas?|people|"
    r"persons?|characters?)\b", re.IGNORECASE)
_HE_SHE = re.compile(r"[\"'\u201c]he is[\"'\u201d]\s+or\s+[\"'\u201c]she is", re.IGNORECASE)
_SIMULATE = re.compile(r"\byour\s+(?:first|next|opening|reply)\s+message\b|\bin character\b",
                       re.IGNORECASE)
_THE_WORD = re.compile(r"\breply with (?:the|this|one) word\s*:?\s*\"?([A-Za-z]+)",
                       re.IGNORECASE)
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10, "twenty": 20}


def _text(message: Message) -> str:
    """A message's text; list-of-parts content (the vision format) is joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _last_user(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message)
    return _text(messages[-1]) if messages else ""


def classify(messages: list[Message]) -> str:
    """The role that sent `messages`: one of ROLES (see the module docstring for the rules)."""
    system = " ".join(_text(m) for m in messages if m.get("role") in ("system", "developer"))
    last = _last_user(messages)
    tail = last[-TAIL:]
    if _ROLE_PLAY.search(system):
        return "user"
    if _ASSISTANT_SYSTEM.search(system) and not _ANNOTATOR.search(system):
        return "assistant"
    if _PREFERENCE.search(tail):
        return "judge_preference"
    if _BINARY.search(tail):
        return "judge_binary"
    if _TEN.search(tail):
        return "judge_ten"
    if _YES_NO.search(tail):
        return "judge_yes_no"
    if _PROBE.search(tail):
        return "probe"
    if _SCORE_WORD.search(tail) and _SCALE.search(tail):
        return "judge_score"
    if _INDUCE_PROFILE.search(tail) and _INDUCE_PERSONALITY.search(tail):
        return "inducer"
    if _GENERATE.search(last[:400]) or _HE_SHE.search(tail):
        return "generator"
    if _SIMULATE.search(tail) or _ROLE_PLAY.search(last[:400]):
        return "user"
    return "assistant"


def requested_count(text: str, default: int = 5, cap: int = 100) -> int:
    """How many items a generator request asks for ("Write 20 new user profiles")."""
    match = _GENERATE.search(text[:400])
    if not match:
        return default
    word = match.group(1).lower()
    count = _NUMBER_WORDS.get(word) or int(word)
    return max(1, min(count, cap))


def requested_kind(text: str) -> str:
    """"personality" when the generator's first sentence asks for personalities (traits),
    else "profile" (facts)."""
    first = text.strip().split("\n", 1)[0][:300].lower()
    return "personality" if ("personalit" in first or "trait" in first) else "profile"


# ==========================================================================================
# Word lists (no role cues in them: see the module docstring)
# ==========================================================================================
JOBS = ["night-shift nurse", "primary-school teacher", "bus driver", "software tester",
        "florist", "dentist", "tram mechanic", "wedding photographer", "beekeeper", "pharmacist",
        "librarian", "sous-chef", "electrician", "museum guide", "yoga instructor", "taxi driver",
        "veterinary assistant", "civil engineer", "hairdresser", "postal worker", "translator",
        "physiotherapist", "carpenter", "air traffic controller", "barista", "tax adviser",
        "marine biologist", "bike courier", "social worker", "radio producer", "locksmith",
        "pastry chef", "park ranger", "welder", "estate agent", "court stenographer",
        "piano tuner", "ferry captain", "data analyst", "tailor", "paramedic", "farmer",
        "bookshop owner", "sound engineer", "chemistry lab technician", "mine safety officer",
        "flight attendant", "kindergarten aide", "glassblower", "warehouse supervisor"]
CITIES = ["Leeds", "Lisbon", "Toronto", "Melbourne", "Frankfurt", "Bangalore", "Osaka",
          "Nairobi", "Lyon", "Austin", "Gdansk", "Porto", "Cork", "Valparaiso", "Tromso",
          "Dundee", "Kraków", "Naples", "Halifax", "Adelaide", "Seville", "Utrecht", "Tallinn",
          "Quebec City", "Bristol", "Denver", "Accra", "Hanoi", "Wellington", "Bergen",
          "Ljubljana", "Cape Town", "Boise", "Graz", "Montevideo", "Busan", "Tucson", "Aarhus",
          "Glasgow", "Savannah", "Bologna", "Cluj", "Perth", "Oaxaca", "Reykjavik", "Duluth"]
PLACES = ["a small village near {city}", "a high-rise flat in {city}", "the suburbs of {city}",
          "a houseboat outside {city}", "the old town of {city}", "a farmhouse an hour from {city}",
          "a shared house in {city}", "a tiny studio in central {city}"]
FAMILY = ["lives alone with {pet}", "shares a flat with two old school friends",
          "is married with three teenage children", "is raising twin toddlers with {poss} wife",
          "lives with {poss} elderly mother", "has just moved in with {poss} partner",
          "is divorced and sees {poss} son every other weekend", "has four older sisters",
          "is a grandparent of six", "lives with {poss} husband and {pet}",
          "is engaged and planning a small wedding", "looks after {poss} younger brother",
          "rents a room from a retired couple", "is a single parent of a nine-year-old"]
PETS = ["a rescue greyhound called Biscuit", "two grumpy cats", "an old parrot", "a tortoise",
        "a three-legged terrier", "a tank of tropical fish", "a pair of rabbits",
        "a sheepdog puppy", "a bearded dragon", "a hive of bees in the garden"]
HOBBIES = ["grows chillies on the balcony", "runs a half marathon every spring",
           "plays chess in the park", "restores old motorbikes", "sings in a choir",
           "bakes sourdough on Fridays", "paints watercolour birds", "collects vinyl records",
           "goes wild swimming all year", "builds model railways", "plays five-a-side football",
           "knits jumpers for the whole family", "brews cider in the shed", "climbs at a gym",
           "follows every Formula 1 race", "writes short horror stories",
           "volunteers at a food bank", "keeps an allotment", "plays bass in a covers band",
           "learns Japanese online", "fixes up vintage radios", "goes birdwatching at dawn",
           "makes pottery on weekends", "plays bridge on Tuesday nights", "skateboards",
           "coaches a junior cricket side", "does crossword puzzles in ink",
           "hikes a new trail every month", "dances salsa", "keeps a film photography blog",
           "fishes off the pier", "plays the accordion", "rides a unicycle", "grows bonsai",
           "watches old westerns", "bakes elaborate birthday cakes", "rows on the river",
           "collects fountain pens", "plays board games with neighbours", "goes stargazing"]
PLANS = ["is saving up for a trip to Japan", "wants to open a small café one day",
         "is learning to drive at last", "hopes to walk the Camino next year",
         "is training for a triathlon", "plans to retire to the coast",
         "is thinking about going back to university", "wants to adopt a second dog",
         "is renovating a kitchen with no experience", "dreams of seeing the northern lights",
         "is about to start night classes in carpentry", "is planning a big family reunion"]
QUIRKS = ["drinks far too much coffee", "never misses a Sunday roast",
          "has supported the same football club since age six", "cannot cook rice properly",
          "keeps every ticket stub since 1990", "wakes up at five without an alarm",
          "is allergic to cats", "hates the sound of leaf blowers", "owns forty houseplants",
          "still writes letters by hand", "has been to every county fair nearby",
          "knows every bus timetable by heart"]
TRAITS = ["cheerful and chatty, telling little stories about {poss} day",
          "reserved and speaks in short, plain sentences",
          "sceptical and asks for evidence before believing anything",
          "dry-humoured and makes understated jokes", "impatient and hates waiting for answers",
          "curious about other people and asks many questions back",
          "anxious about mistakes and looks for reassurance",
          "enthusiastic and uses lots of exclamation marks",
          "methodical and likes step-by-step explanations",
          "blunt and says exactly what {pron} thinks", "warm and quick to compliment people",
          "easily distracted and jumps between topics", "formal and polite, even with friends",
          "sarcastic when tired", "modest and plays down {poss} achievements",
          "stubborn once {pron} has made up {poss} mind", "gentle and never raises {poss} voice",
          "competitive about even trivial things", "nostalgic and often talks about the past",
          "optimistic even when things go wrong", "shy at first but opens up slowly",
          "opinionated about food and music", "forgetful and loses track of what {pron} said",
          "playful and enjoys silly hypotheticals", "thoughtful and pauses before answering",
          "restless and always planning the next thing", "sensitive to criticism",
          "practical and wants advice {pron} can use straight away",
          "chatty late at night but terse in the morning", "fond of puns and wordplay",
          "argumentative for the fun of it", "patient and a good listener",
          "self-deprecating and laughs at {poss} own mistakes", "guarded about feelings",
          "dramatic and tells everything as a big story", "precise and corrects small errors",
          "spontaneous and changes plans on a whim", "grumpy but kind underneath",
          "generous with time and loves helping", "cautious and dislikes taking risks"]
USER_OPENERS = ["hey!", "hi there.", "ugh,", "so", "honestly,", "okay so", "morning!",
                "guess what,", "long day.", "hmm,"]
USER_LINES = ["I just got back from {activity} and I'm shattered.",
              "I finally finished {thing} this weekend.", "I've been thinking about {thing} a lot.",
              "my neighbour asked me about {activity} again today.",
              "I can't stop planning {thing}.", "work was chaos but {activity} saved my evening.",
              "I tried {activity} for the first time in ages.",
              "it rained all day so I stayed in and sorted out {thing}."]
USER_ENDINGS = ["what are you up to?", "kind of proud of myself tbh.", "not sure how I feel.",
                "anyway, how's your day going?", "it was fun though.", "need a nap now lol.",
                "", ""]
ACTIVITIES = ["swimming", "the allotment", "choir practice", "a long bike ride",
              "baking", "the market", "a hike", "band rehearsal", "the gym", "a pottery class"]
THINGS = ["my garden shed", "a jigsaw puzzle", "my trip plans", "the kitchen shelves",
          "a birthday present for my sister", "my old photos", "the book club novel"]
ASSISTANT_OPENERS = ["That sounds great!", "Oh, I love that.", "That's quite a day.",
                     "Nice one!", "That sounds lovely.", "Ah, I can imagine.",
                     "That must feel good.", "Fair enough!"]
ASSISTANT_MIDDLES = ["It's good to make time for the things you enjoy.",
                     "Small wins like that really add up.",
                     "A bit of rest after all that sounds well deserved.",
                     "Doing something with your hands can be really calming.",
                     "It's funny how plans change once you get going.", ""]
ASSISTANT_QUESTIONS = ["How long have you been into it?", "What's next on your list?",
                       "Did anything surprise you?", "Who else was there?",
                       "Are you doing it again soon?", "What got you started?"]
INDUCED_FACTS = ["mentioned a busy job", "talked about a hobby", "has a garden",
                 "spends evenings at home", "has family nearby", "likes being outdoors",
                 "is planning a trip", "keeps a pet"]
INDUCED_TRAITS = ["casual and friendly", "terse", "enthusiastic", "chatty", "relaxed",
                  "a little tired", "upbeat", "dry-humoured"]


def _pronouns(rng: random.Random) -> dict[str, str]:
    if rng.random() < 0.5:
        return {"subj": "He", "pron": "he", "poss": "his"}
    return {"subj": "She", "pron": "she", "poss": "her"}


def _fill(template: str, p: dict[str, str], **extra: str) -> str:
    return template.format(pron=p["pron"], poss=p["poss"], **extra)


# ==========================================================================================
# Replies, one builder per role
# ==========================================================================================
def profile_paragraph(rng: random.Random, job: str, city: str) -> str:
    """A profile: 8-10 plain facts about one person, in one of a few sentence layouts."""
    p = _pronouns(rng)
    age = rng.randint(17, 84)
    place = rng.choice(PLACES).format(city=city)
    family = _fill(rng.choice(FAMILY), p, pet=rng.choice(PETS))
    hobbies = rng.sample(HOBBIES, 3)
    plan, quirk = rng.choice(PLANS), rng.choice(QUIRKS)
    s = p["subj"]
    layout = rng.randrange(3)
    if layout == 0:
        return (f"{s} is a {age}-year-old {job} who lives in {place}. {s} {family}, "
                f"{hobbies[0]} and {hobbies[1]}. {s} {quirk}, {hobbies[2]} and {plan}.")
    if layout == 1:
        return (f"{s} is a {age}-year-old {job} from {city}. {s} {family}. "
                f"In {p['poss']} free time {p['pron']} {hobbies[0]}, {hobbies[1]} and "
                f"{hobbies[2]}. {s} {quirk} and {plan}.")
    return (f"{s} is {age}, works as a {job} and lives in {place}. {s} {hobbies[0]} and "
            f"{hobbies[1]}. {s} {family}, {quirk}, {hobbies[2]} and {plan}.")


def personality_paragraph(rng: random.Random) -> str:
    """A personality: 6-8 traits, each a sentence "He is ... / She is ...", no facts."""
    p = _pronouns(rng)
    traits = rng.sample(TRAITS, rng.randint(6, 8))
    return " ".join(f"{p['subj']} is {_fill(t, p)}." for t in traits)


def generator_reply(rng: random.Random, last: str) -> str:
    """`requested_count` distinct paragraphs, one per line; jobs and cities never repeat
    within one reply, and the combination is drawn afresh for every request."""
    count = requested_count(last)
    if requested_kind(last) == "personality":
        items = [personality_paragraph(rng) for _ in range(count)]
    else:
        jobs = rng.sample(JOBS, min(count, len(JOBS))) * (count // len(JOBS) + 1)
        cities = rng.sample(CITIES, min(count, len(CITIES))) * (count // len(CITIES) + 1)
        items = [profile_paragraph(rng, jobs[i], cities[i]) for i in range(count)]
    return "\n".join(dict.fromkeys(items))  # distinct, in order


def user_reply(rng: random.Random) -> str:
    """One or two casual first-person sentences."""
    line = rng.choice(USER_LINES).format(activity=rng.choice(ACTIVITIES), thing=rng.choice(THINGS))
    text = f"{rng.choice(USER_OPENERS)} {line} {rng.choice(USER_ENDINGS)}".strip()
    return text[0].upper() + text[1:]


def inducer_reply(rng: random.Random, last: str) -> str:
    """The two answer lines; "none" while the transcript shows no user message yet."""
    said = re.search(r"^\s*(?:user|you)\s*:", last, re.IGNORECASE | re.MULTILINE)
    if not said:
        return "Profile: none\nPersonality: none"
    facts = "; ".join(rng.sample(INDUCED_FACTS, rng.randint(1, 3)))
    traits = "none" if rng.random() < 0.2 else ", ".join(rng.sample(INDUCED_TRAITS, 2))
    return f"Profile: {facts}\nPersonality: {traits}"


def assistant_reply(rng: random.Random) -> str:
    """One to three friendly sentences."""
    parts = [rng.choice(ASSISTANT_OPENERS), rng.choice(ASSISTANT_MIDDLES),
             rng.choice(ASSISTANT_QUESTIONS) if rng.random() < 0.8 else ""]
    return " ".join(part for part in parts if part)


def reply_text(role: str, messages: list[Message], rng: random.Random) -> str:
    last = _last_user(messages)
    if role == "generator":
        return generator_reply(rng, last)
    if role == "user":
        return user_reply(rng)
    if role == "inducer":
        return inducer_reply(rng, last)
    if role == "judge_preference":
        return rng.choice("12")
    if role == "judge_score":
        return str(rng.choices((1, 2, 3, 4, 5), weights=(1, 2, 4, 4, 2))[0])
    if role == "judge_binary":
        verdict = rng.choice("0111")
        reason = "It is friendly and fits." if verdict == "1" else "It feels generic."
        return f"{reason}\nVerdict: {verdict}"
    if role == "judge_ten":
        return str(rng.randint(0, 10))
    if role == "judge_yes_no":
        return rng.choice(("no", "no", "no", "yes"))
    if role == "probe":
        facts = " and ".join(rng.sample(INDUCED_FACTS, 2))
        return f"You {facts}, and you come across as {rng.choice(INDUCED_TRAITS)}."
    word = _THE_WORD.search(last[-TAIL:])
    return word.group(1).lower() if word else assistant_reply(rng)


# ==========================================================================================
# Log-probabilities, in OpenAI's shape
# ==========================================================================================
_TOKEN = re.compile(r"\s*\S+|\s+")
_ALTERNATIVES = {"judge_preference": ["1", "2", " ", "Reply", "The"],
                 "judge_score": ["1", "2", "3", "4", "5", " ", "Score"]}
_FILLER = [" the", " a", ",", ".", " and", " I", " to", "\n"]


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def logprob_content(role: str, text: str, top: int, rng: random.Random) -> list[dict[str, Any]]:
    """One entry per token (a word with its leading space); the emitted token is the likeliest,
    the rest of the mass goes to `top - 1` alternatives (the other digits for a judge)."""
    content = []
    for token in _TOKEN.findall(text) or [text]:
        p_top = 0.5 + 0.49 * rng.random()
        logprob = _log(p_top)
        entry = _entry(token, logprob)
        choices = [t for t in _ALTERNATIVES.get(role, _FILLER) if t != token]
        others, rest = [], 1.0 - p_top
        for alternative in choices[:max(top - 1, 0)]:
            rest *= 0.5
            others.append(_entry(alternative, _log(rest)))
        entry["top_logprobs"] = ([_entry(token, logprob)] + others)[:top]
        content.append(entry)
    return content


def _log(p: float) -> float:
    return round(math.log(max(p, 1e-12)), 6)


# ==========================================================================================
# One chat completion: a pure function of the body and the seed
# ==========================================================================================
def _chars(messages: list[Message]) -> int:
    return sum(len(_text(m)) for m in messages)


def complete(body: dict[str, Any], seed: int = 0, created: int = 0,
             unreadable: dict[str, float] | None = None) -> tuple[str, dict[str, Any]]:
    """The role and the chat.completion object answering `body`."""
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise ValueError("'messages' must be a list")
    digest = hashlib.blake2b(_canonical(body), digest_size=16,
                             key=str(seed).encode()[:64]).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    role = classify(messages)
    share = (unreadable or {}).get(role, 0.0)
    if share and rng.random() < share:
        text = "Hard to say from this."
    else:
        text = reply_text(role, messages, rng)
    logprobs = None
    if body.get("logprobs"):
        top = int(body.get("top_logprobs") or 0)
        logprobs = {"content": logprob_content(role, text, top, rng), "refusal": None}
    prompt_tokens, completion_tokens = max(1, _chars(messages) // 4), max(1, len(text) // 4)
    return role, {
        "id": "chatcmpl-stub-" + digest.hex(), "object": "chat.completion", "created": created,
        "model": str(body.get("model") or "stub"), "system_fingerprint": "aloe-stub",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                     "message": {"role": "assistant", "content": text, "refusal": None}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}}


# ==========================================================================================
# The HTTP/1.1 server
# ==========================================================================================
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Payload Too Large", 431: "Header Too Large",
            500: "Internal Server Error"}


def _error(message: str, kind: str = "invalid_request_error") -> bytes:
    return _dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


class StubApp:
    """Routing, the counters and the fault RNG shared by all connections of one server."""

    def __init__(self, seed: int = 0, latency_s: float = 0.0, fail_rate: float = 0.0,
                 model: str = "stub", unreadable: dict[str, float] | None = None,
                 fail_roles: tuple[str, ...] = ()):
        self.seed, self.latency_s, self.fail_rate, self.model = seed, latency_s, fail_rate, model
        self.unreadable, self.fail_roles = dict(unreadable or {}), set(fail_roles)
        self.faults = random.Random(f"faults/{seed}")
        self.created = int(time.time())
        self.requests = 0
        self.failures = 0
        self.by_role: Counter[str] = Counter()
        self.models = _dumps({"object": "list", "data": [
            {"id": model, "object": "model", "created": self.created, "owned_by": "aloe-stub"}]})

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        """(status, JSON payload, role or "") for one request."""
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/health":
            return 200, b'{"status":"ok"}', ""
        if path in ("/v1/models", "/models"):
            return 200, self.models, ""
        if path == "/stats":
            return 200, _dumps({"requests": self.requests, "failures": self.failures,
                                "by_role": dict(self.by_role)}), ""
        if path not in ("/v1/chat/completions", "/chat/completions"):
            return 404, _error(f"no route {path}"), ""
        if method != "POST":
            return 405, _error("use POST"), ""
        self.requests += 1
        if self.fail_rate and self.faults.random() < self.fail_rate:
            self.failures += 1
            return 500, _error("stub: injected failure", "server_error"), ""
        try:
            request = _loads(body)
            if request.get("stream"):
                return 400, _error("stub: streaming is not supported"), ""
            if self.fail_roles and classify(request.get("messages") or []) in self.fail_roles:
                self.failures += 1
                return 500, _error("stub: this role is down", "server_error"), ""
            role, response = complete(request, self.seed, self.created, self.unreadable)
        except (ValueError, TypeError, AttributeError) as error:
            return 400, _error(f"stub: bad request body: {error}"), ""
        self.by_role[role] += 1
        return 200, _dumps(response), role


def _head(status: int, length: int, keep_alive: bool, role: str) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
             "Content-Type: application/json", f"Content-Length: {length}"]
    if role:
        lines.append(f"X-Stub-Role: {role}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Request:
    __slots__ = ("method", "path", "body", "keep_alive")

    def __init__(self, method: str, path: str, body: bytes, keep_alive: bool):
        self.method, self.path, self.body, self.keep_alive = method, path, body, keep_alive


def parse_request(buffer: bytearray) -> tuple[_Request | None, int]:
    """The first complete request in `buffer` and the bytes it used; (None, 0) while it is
    incomplete. Raises ValueError (with an HTTP status as args[1]) on a malformed one."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ValueError("headers too large", 431)
        return None, 0
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    try:
        method, path, version = lines[0].split(" ", 2)
    except ValueError:
        raise ValueError("bad request line", 400) from None
    length, chunked, connection = 0, False, ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            connection = value.strip().lower()
    keep_alive = (connection != "close") if version == "HTTP/1.1" else connection == "keep-alive"
    start = end + 4
    if chunked:
        body, used = _dechunk(buffer, start)
        if body is None:
            return None, 0
        return _Request(method, path, body, keep_alive), used
    if length > MAX_BODY:
        raise ValueError("body too large", 413)
    if len(buffer) < start + length:
        return None, 0
    return _Request(method, path, bytes(buffer[start:start + length]), keep_alive), start + length


def _dechunk(buffer: bytearray, at: int) -> tuple[bytes | None, int]:
    """A chunked body starting at `at`: (body, end offset), or (None, 0) while incomplete."""
    parts = []
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None, 0
        size = int(bytes(buffer[at:line_end]).split(b";", 1)[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", at - 2)
            return (b"".join(parts), trailer_end + 4) if trailer_end >= 0 else (None, 0)
        if len(buffer) < at + size + 2:
            return None, 0
        parts.append(bytes(buffer[at:at + size]))
        at += size + 2


class StubProtocol(asyncio.Protocol):
    """One connection: requests are parsed as bytes arrive and answered strictly in order."""

    def __init__(self, app: StubApp):
        self.app = app
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Task[None] | None = None  # the last delayed answer (latency_s)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None:
            self.pending.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            try:
                request, used = parse_request(self.buffer)
            except ValueError as error:
                status = error.args[1] if len(error.args) > 1 else 400
                self._send(status, _error(str(error.args[0])), False, "")
                return
            if request is None:
                return
            del self.buffer[:used]
            status, payload, role = self.app.handle(request.method, request.path, request.body)
            if self.app.latency_s > 0 and role:
                self.pending = asyncio.ensure_future(self._later(
                    self.pending, status, payload, request.keep_alive, role))
            elif self.pending is not None and not self.pending.done():  # keep the order
                self.pending = asyncio.ensure_future(self._later(
                    self.pending, status, payload, request.keep_alive, role, delay=0.0))
            else:
                self._send(status, payload, request.keep_alive, role)
            if not request.keep_alive:
                return

    async def _later(self, previous: asyncio.Task[None] | None, status: int, payload: bytes,
                     keep_alive: bool, role: str, delay: float | None = None) -> None:
        if previous is not None:
            await previous
        await asyncio.sleep(self.app.latency_s if delay is None else delay)
        self._send(status, payload, keep_alive, role)

    def _send(self, status: int, payload: bytes, keep_alive: bool, role: str) -> None:
        if self.transport is None:
            return
        self.transport.write(_head(status, len(payload), keep_alive, role) + payload)
        if not keep_alive:
            self.transport.close()
            self.transport = None


async def serve(host: str, port: int, app: StubApp, parent_pid: int | None = None,
                announce: bool = False) -> None:
    """Serve until cancelled (or until the parent process is gone)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StubProtocol(app), host, port, backlog=2048,
                                      reuse_address=True)
    if announce:  # the parent reads the port from this line
        bound = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"PORT {bound}\n")
        sys.stdout.flush()
    async with server:
        while True:
            await asyncio.sleep(0.25)
            if parent_pid is not None and os.getppid() != parent_pid:
                return  # the parent died (we were re-parented): do not outlive it


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGTERM when the parent dies; exit at once if it is already gone."""
    from aloe.core.procs import ask_for_parent_death_signal

    ask_for_parent_death_signal(signal.SIGTERM)  # the polling in `serve` covers the rest
    if os.getppid() != parent_pid:
        sys.exit(0)


def _shares(text: str) -> dict[str, float]:
    """`--unreadable`'s ROLE=SHARE list as a dict (an unknown role is refused)."""
    shares = {}
    for item in filter(None, text.split(",")):
        role, _, share = item.partition("=")
        if role not in ROLES:
            raise SystemExit(f"--unreadable: unknown role {role!r}; one of {', '.join(ROLES)}")
        shares[role] = float(share)
    return shares


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (announced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--model", default="stub")
    parser.add_argument("--unreadable", default="",
                        help="comma-separated ROLE=SHARE: that share of the role's answers "
                             "carry nothing to read (e.g. inducer=0.4,judge_score=1)")
    parser.add_argument("--fail-roles", default="", help="comma-separated roles answered 500")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process (our parent) is gone")
    parser.add_argument("--pdeathsig", action="store_true",
                        help="also ask Linux for SIGTERM when the parent dies (prctl)")
    parser.add_argument("--announce", action="store_true", help="print 'PORT N' when ready")
    args = parser.parse_args(argv)
    if args.parent_pid is not None and args.pdeathsig:
        _die_with_parent(args.parent_pid)
    app = StubApp(args.seed, args.latency_s, args.fail_rate, args.model,
                  _shares(args.unreadable), tuple(filter(None, args.fail_roles.split(","))))
    try:
        asyncio.run(serve(args.host, args.port, app, args.parent_pid, args.announce))
    except KeyboardInterrupt:
        pass


# ==========================================================================================
# The handle tests and benchmarks use
# ==========================================================================================
class StubServerError(RuntimeError):
    """The stub process did not come up."""


class StubServer:
    """`with StubServer(seed=0, latency_s=0.0) as stub: stub.base_url` (ends in /v1).

    Starts `python -m tests.support.stub_server` from the repository root on a free loopback
    port, waits for `/health` to answer 200, and on exit terminates it (then kills it). The
    child exits by itself when this process dies: it polls its parent pid, and, when started
    from the main thread, also asks Linux for SIGTERM on the parent's death (prctl
    PR_SET_PDEATHSIG; not from other threads, because that signal fires when the starting
    THREAD ends).
    """

    def __init__(self, seed: int = 0, latency_s: float = 0.0, fail_rate: float = 0.0, *,
                 model: str = "stub", port: int = 0, startup_timeout: float = 15.0,
                 unreadable: dict[str, float] | None = None, fail_roles: tuple[str, ...] = ()):
        self.seed, self.latency_s, self.fail_rate, self.model = seed, latency_s, fail_rate, model
        self.unreadable, self.fail_roles = dict(unreadable or {}), fail_roles
        self.port = port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "tests.support.stub_server", "--port", str(self.port),
                   "--seed", str(self.seed), "--latency-s", str(self.latency_s),
                   "--fail-rate", str(self.fail_rate), "--model", self.model,
                   "--unreadable", ",".join(f"{r}={s}" for r, s in self.unreadable.items()),
                   "--fail-roles", ",".join(self.fail_roles),
                   "--parent-pid", str(os.getpid()), "--announce"]
        if threading.current_thread() is threading.main_thread():
            command.append("--pdeathsig")
        return command

    def start(self) -> "StubServer":
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        try:
            self.port = self._read_port(deadline)
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self, deadline: float) -> int:
        assert self.process is not None and self.process.stdout is not None
        found: list[bytes] = []
        reader = threading.Thread(target=lambda: found.append(self.process.stdout.readline()),
                                  daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(max(deadline - time.monotonic(), 0.0))
        line = found[0].decode().strip() if found else ""
        if not line.startswith("PORT "):
            raise StubServerError(f"the stub server did not start (exit code "
                                  f"{self.process.poll()}, said {line!r})")
        return int(line.split()[1])

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise StubServerError("the stub server exited during start-up")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    connection.close()
                    return
                connection.close()
            except OSError:
                pass
            time.sleep(0.02)
        raise StubServerError(f"the stub server on port {self.port} did not answer /health "
                              f"within {self.startup_timeout} s")

    def stats(self) -> dict[str, Any]:
        """The server's counters: requests, failures, by_role."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5.0)
        try:
            connection.request("GET", "/stats")
            return _loads(connection.getresponse().read())
        finally:
            connection.close()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
