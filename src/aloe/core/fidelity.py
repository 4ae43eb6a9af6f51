"""Every difference between this workbook and the authors' released ALOE code, declared once.

Each `Difference` says what the released code does (../shared/aloe_reference/PROTOCOL.md, with
its file and line), what `params/paper.yaml` and `params/paper_plus.yaml` do, and why. The
profiles' columns name their values as `{section.key}` placeholders, filled from the parameter
files themselves, so the table cannot state a value a profile does not hold; `released` pins the
switches whose released value `paper.yaml` must take (tests/test_fidelity.py checks both, and
that docs/fidelity.md's table is `markdown_table()`'s; `python scripts/fidelity_table.py` rewrites
it). Notebooks 02 and 05 show a run's own values of the switches (`switch_rows`).

`params/paper_full.yaml` is paper.yaml with the released training (full fine-tuning): its
column (`full`) is declared only where it differs from paper.yaml, `full_pinned` holds the
released values it must take, and `full_table` writes those rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aloe.core.config import Params

SAME = "same"  # the paper_plus column: as paper.yaml


@dataclass(frozen=True)
class Difference:
    aspect: str
    released: str  # what the released code does, in words
    paper: str  # params/paper.yaml, `{section.key}` placeholders filled from it
    plus: str  # params/paper_plus.yaml, likewise; SAME: as paper.yaml
    why: str
    pinned: Mapping[str, Any] = field(default_factory=dict)  # switch -> its released value
    full: str = SAME  # params/paper_full.yaml, likewise; SAME: as paper.yaml
    full_pinned: Mapping[str, Any] = field(default_factory=dict)  # what paper_full must take


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "fine-tuning", "full, bf16, several large GPUs (`training/SFT.py`, `training/dpo.py`)",
        "QLoRA: 4-bit NF4 base, LoRA r={sft.lora_r} on every linear layer", SAME,
        "one 24 GB GPU is the workbook's goal (docs/gpu.md measures it)",
        {"sft.base_model": "meta-llama/Meta-Llama-3-8B-Instruct"},
        full="`{sft.method}` (`sft.method`, `dpo.method`): every weight, bf16 compute over "
             "fp32 master weights, FSDP over {sft.processes} GPUs (`sft.processes`)",
        full_pinned={"sft.method": "full", "dpo.method": "full", "sft.load_in_4bit": False,
                     "dpo.load_in_4bit": False}),
    Difference(
        "optimiser", "AdamW in fp32 states (the Trainer's default)",
        "`{sft.trainer.optim}` for both stages", SAME,
        "8-bit states paged to CPU memory at a spike: what lets an 8B model's adapters train "
        "on one 24 GB card",
        full="`{sft.trainer.optim}` (fp32 states) for both stages",
        full_pinned={"sft.trainer.optim": "adamw_torch", "dpo.trainer.optim": "adamw_torch"}),
    Difference(
        "learning rates", "SFT 1e-5, DPO 1e-5 (full fine-tuning)",
        "SFT {sft.trainer.learning_rate}, DPO {dpo.trainer.learning_rate}",
        "SFT {sft.trainer.learning_rate}, DPO {dpo.trainer.learning_rate}",
        "LoRA trains at 10 times the full fine-tuning rate, as the alignment-handbook's "
        "Zephyr-7B recipes do for both stages (SFT 2e-5 full, 2e-4 QLoRA; DPO 5e-7 full, "
        "5e-6 QLoRA): paper.yaml takes 10 x the released 1e-5 for both; paper_plus.yaml's DPO "
        "continues SFT and takes the handbook's QLoRA DPO rate",
        full="SFT {sft.trainer.learning_rate}, DPO {dpo.trainer.learning_rate}",
        full_pinned={"sft.trainer.learning_rate": 1e-5, "dpo.trainer.learning_rate": 1e-5}),
    Difference(
        "effective batch", "SFT 1 x 48, DPO 4 x 12",
        "{sft.trainer.per_device_train_batch_size} x "
        "{sft.trainer.gradient_accumulation_steps} for both", SAME,
        "the released effective batch, in one GPU's memory",
        {"sft.trainer.gradient_accumulation_steps": 48},
        full="SFT {sft.processes} GPUs x {sft.trainer.per_device_train_batch_size} x "
             "{sft.trainer.gradient_accumulation_steps}, DPO {dpo.processes} GPUs x "
             "{dpo.trainer.per_device_train_batch_size} x "
             "{dpo.trainer.gradient_accumulation_steps}: 48, the released micro-batches",
        full_pinned={"sft.trainer.per_device_train_batch_size": 1,
                     "dpo.trainer.per_device_train_batch_size": 4}),
    Difference(
        "SFT loss and data",
        "every token, packed, each conversation's prefixes, mixed with CodeAct",
        "the preferred reply of each decided turn only; no packing, no CodeAct", SAME,
        "learn the tailored reply, not the simulated user; CodeAct is not part of ALOE's "
        "method"),
    Difference(
        "SFT user turns", "bug: every user turn is the first user message",
        "the real user messages", SAME, "the bug's intent"),
    Difference(
        "SFT history (`sft.history`)", "the preferred reply at every earlier turn",
        "`{sft.history}`", "`{sft.history}`",
        "DPO, and the conversation itself, went on with the continued reply",
        {"sft.history": "preferred"}),
    Difference(
        "sequence lengths (`sft.trainer.max_length`, `dpo.trainer.max_length`)",
        "SFT packs to 8,192 tokens (`SFT.py:144`); DPO sets none, so the TRL of the time used "
        "512 in all and cut each prompt to its last 128 tokens",
        "SFT {sft.trainer.max_length}, DPO {dpo.trainer.max_length}; a history that does not "
        "fit loses its oldest whole turns, never the reply; no 128-token prompt cut",
        "SFT {sft.trainer.max_length}, DPO {dpo.trainer.max_length}",
        "the released lengths fit one 24 GB card (SFT at 8,192 tokens peaked at 15.3 GB, "
        "docs/gpu.md); the locked TRL has no separate prompt length, and a cut inside a "
        "message would leave a chat the model never sees at inference. paper_plus.yaml: 2,048 "
        "holds a whole 10-turn history for both stages",
        {"sft.trainer.max_length": 8192, "dpo.trainer.max_length": 512}),
    Difference(
        "DPO start and reference (`dpo.start_from`, `dpo.trainer.beta`)",
        "the Instruct model; its copy as reference; beta 0.9",
        "`{dpo.start_from}` (the adapter switched off is the reference); "
        "{dpo.trainer.beta}",
        "`{dpo.start_from}` (the SFT policy is the reference); {dpo.trainer.beta}",
        "the usual DPO recipe continues SFT", {"dpo.start_from": "base", "dpo.trainer.beta": 0.9},
        full="`{dpo.start_from}`, a separate frozen copy of it the reference; {dpo.trainer.beta}",
        full_pinned={"dpo.start_from": "base", "dpo.trainer.beta": 0.9}),
    Difference(
        "DPO rejected reply", "bug: `random.choice` over the reply string, one character",
        "the rejected reply", SAME, "the bug's intent"),
    Difference(
        "persona generation",
        "gpt-4o, 5 examples, 20 new a call, one call at a time, 3,000 calls; bug: the reply "
        "replaces the prompt after the first call",
        "{roles.generator.model} (pinned), {personas.sample_k} examples, "
        "{personas.generate_n} new, {personas.calls_per_round} calls a round, at most "
        "3,000; our own seeds and wording", SAME, "no bug; rounds of concurrent calls",
        {"personas.sample_k": 5, "personas.generate_n": 20,
         "roles.generator.temperature": 0.8}),
    Difference(
        "persona prompts",
        "profiles: 8-10 daily, objective facts; personalities: 8-10 traits",
        "this project's wording: personalities of about 6 to 10 traits; every profile and "
        "personality starts with \"He is\" or \"She is\" (`generate_*.txt`)", SAME,
        "a personality of a few strong traits still reads as a person; the pronoun keeps "
        "stage 2 and stage 5 from guessing a gender"),
    Difference(
        "novelty filter",
        "paraphrase-MiniLM-L6-v2, 0.6, the whole pool re-encoded per candidate",
        "{personas.embedding_model}, {personas.threshold}; each candidate encoded once (the "
        "same decisions, linear time)", SAME, "speed",
        {"personas.threshold": 0.6, "personas.embedding_model": "paraphrase-MiniLM-L6-v2"}),
    Difference(
        "pairing (`personas.pairing`)",
        "10 passes, a personality each drawn with replacement", "`{personas.pairing}`",
        "`{personas.pairing}` (10 different personalities a profile)",
        "a profile meets the same personality twice only by chance",
        {"personas.pairing": "random"}),
    Difference(
        "who talks with whom", "10 passes over the profiles, stopped at 3,000 conversations",
        "every profile, as evenly as {conversations.n_conversations} allows (9 or 10 each)",
        SAME, "taking personas in file order would leave profiles out",
        {"conversations.n_conversations": 3000, "conversations.turns": 10}),
    Difference(
        "dropped conversations (`conversations.replace_dropped`)",
        "an unreadable turn is retried up to 3 times, then the conversation is dropped and "
        "another written, until 3,000 are written (`data_generation.py:236-239`, `:330`)",
        "`{conversations.replace_dropped}`: an unreadable inducer answer is drawn once more, "
        "then the conversation is dropped (and counted) and the plan's next persona takes its "
        "place, until {conversations.n_conversations} are complete",
        "`{conversations.replace_dropped}`: the workbook prompts drop none (an unreadable "
        "answer gives a turn without a hint)",
        "the released count of complete conversations; at most n_conversations replacements, "
        "so a backend that drops everything cannot run on",
        {"conversations.replace_dropped": True}),
    Difference(
        "leakage", "none",
        "training personas screened against the evaluated benchmark; near-copies "
        "(similarity > {personas.leakage_threshold}) dropped", SAME,
        "a benchmark user must not be a training user"),
    Difference(
        "prompts (`conversations.prompt_style`)",
        "no system messages; role-play as the user's first message; hints and \"within 3 "
        "sentences\" in the user turns",
        "`{conversations.prompt_style}`: that message structure, this project's wording",
        "`{conversations.prompt_style}`: a system message per role, a transcript for each "
        "annotator, one worked example",
        "small and large models follow the workbook prompts more reliably",
        {"conversations.prompt_style": "reference"}),
    Difference(
        "simulated user's messages",
        "text between asterisks removed",
        "also a leading name or role label, wrapping quotes, bracketed and parenthesised "
        "stage directions, and whatever follows the next speaker's label removed; a message "
        "cut at `max_tokens` trimmed to its last sentence (`simulator.clean_user_message`)",
        SAME,
        "small models write `User: \"...\"` or `(smiles)`; left in, the model under test "
        "answers a script, not a person"),
    Difference(
        "stage-2 replies cut at `max_tokens`", "kept as cut",
        "trimmed to their last whole sentence", SAME,
        "a reply cut mid-word would teach the policy to stop mid-word"),
    Difference(
        "stage-2 judge (`conversations.judge_rule`)",
        "asked once, hinted reply always first; any answer but \"first\" counts as plain",
        "`{conversations.judge_rule}`",
        "`{conversations.judge_rule}`: asked in both orders; disagreement is `inconsistent`",
        "position bias shows instead of entering the data",
        {"conversations.judge_rule": "hinted_first"}),
    Difference(
        "reading the stage-2 judge (`conversations.judge_reading`)",
        "only the answer `first`, exactly as returned, names the hinted reply "
        "(`data_generation.py`: `better == 'first'`)", "`{conversations.judge_reading}`",
        "`{conversations.judge_reading}`: \"First\", \"first.\", \"1\", \"Message 1\" name the "
        "first reply",
        "a capitalised or punctuated answer is the judge's choice, not a vote for the plain "
        "reply", {"conversations.judge_reading": "exact"}),
    Difference(
        "annotator sampling", "API default temperature 1.0, 300 tokens",
        "{roles.judge.temperature}, {roles.judge.max_tokens}",
        "inducer and judge at {roles.judge.temperature}",
        "a verdict should not depend on a draw",
        {"roles.judge.temperature": 1.0, "roles.judge.max_tokens": 300,
         "roles.inducer.temperature": 1.0, "roles.user.temperature": 1.0,
         "roles.assistant.temperature": 1.0, "roles.user.max_tokens": 300}),
    Difference(
        "unreadable inducer answer", "the turn is retried, then the conversation dropped",
        "drawn again, then the conversation dropped (and counted)",
        "asked again in the same chat, then no hint; the turn is left out of the exports "
        "(`no_hint`)", "never a preference pair without a hint"),
    Difference(
        "stage-5 simulated user (`evaluation.prompt_style`)",
        "role-play; replies fed back as they are", "`{evaluation.prompt_style}`",
        "`{evaluation.prompt_style}`", "see prompts",
        {"evaluation.prompt_style": "reference", "evaluation.turns": 10}),
    Difference(
        "stage-5 judge (`evaluation.judge_context`)",
        "the user's latest message and the reply; temperature 1; `int()` crashes on anything "
        "but a digit",
        "`{evaluation.judge_context}`; an unreadable score asked once more, then missing",
        "`{evaluation.judge_context}` (the whole conversation), temperature "
        "{roles.judge.temperature}",
        "a reply's fit depends on what the user said before",
        {"evaluation.judge_context": "last_message"}),
    Difference(
        "model under test (`evaluation.temperature`, `max_new_tokens`)",
        "its own generation config; 2,048 new tokens",
        "`{evaluation.temperature}` (its own config); {evaluation.max_new_tokens}; cut "
        "replies counted",
        "{evaluation.temperature} for every model; {evaluation.max_new_tokens}",
        "one temperature compares models fairly",
        {"evaluation.temperature": None, "evaluation.max_new_tokens": 2048}),
    Difference(
        "the model under test's base (`evaluation.adapter_base`)",
        "the fine-tuned weights themselves, in bf16",
        "`{evaluation.adapter_base}`: the adapter on the 4-bit NF4 base it was trained on (the "
        "base model loaded the same way)", SAME,
        "the function scored is the one trained; `unquantised` (the default) serves the "
        "adapter on the bf16 base, as adapters usually are, which differs slightly",
        {"evaluation.adapter_base": "as_trained"},
        full="the fine-tuned weights themselves (no adapter)"),
    Difference(
        "the model under test's prompt",
        "cut from the left to the model's context length (`eval_own.py`: "
        "`truncation_side='left'`)",
        "the whole conversation, never cut", SAME,
        "the benchmark measures adaptation over the whole conversation; a cut would hide its "
        "first turns from the model without a trace (ten turns of replies of the usual length "
        "fit Llama-3's 8,192 tokens)"),
    Difference(
        "statistics", "the mean score per turn",
        "AL(k), IR, N-IR, N-R², paired differences, bootstrap intervals (`{evaluation."
        "bootstrap_unit}`: two-way over profiles and personalities)", SAME,
        "the 100 users cross 20 profiles with 5 personalities"),
    Difference(
        "models", "`gpt-4o`, `gpt-4o-mini-2024-07-18`",
        "pinned `{roles.generator.model}`, `{roles.judge.model}`", SAME,
        "an alias can move; a run months later must talk to the same model",
        {"roles.judge.model": "gpt-4o-mini-2024-07-18",
         "roles.user.model": "gpt-4o-mini-2024-07-18"}),
    Difference(
        "validation split (`conversations.validation_fraction`)", "none",
        "{conversations.validation_fraction}",
        "{conversations.validation_fraction}: that share of the personas held out",
        "held-out users for the base-vs-adapter comparison",
        {"conversations.validation_fraction": 0.0}),
    Difference(
        "seeds", "none", "`run.seed` in every sampled request's cache key and seed", SAME,
        "two seeds draw independent samples"),
    Difference(
        "engineering", "sequential; no cache; no resume",
        "any OpenAI-compatible backend per role, concurrency, retries, response cache, resume",
        SAME, "scale and robustness; the protocol is unchanged"),
)


def value(params: Params, key: str) -> Any:
    """A parameter by its dotted key, through sections and mappings
    (`dpo.trainer.beta`, `roles.judge.model`)."""
    current: Any = params
    for part in key.split("."):
        current = current.get(part) if isinstance(current, Mapping) else getattr(current, part)
    return current


def shown(value_: Any) -> str:
    """A parameter's value as the table writes it: 1e-4, 2,048, null, true."""
    if value_ is None:
        return "null"
    if isinstance(value_, bool):
        return str(value_).lower()
    if isinstance(value_, float) and value_ and abs(value_) < 1e-3:
        mantissa, exponent = f"{value_:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    if isinstance(value_, int) and abs(value_) >= 1000:
        return f"{value_:,}"
    if isinstance(value_, float):
        return f"{value_:.1f}" if value_.is_integer() else f"{value_:g}"
    return str(value_)


_PLACEHOLDER = re.compile(r"\{([a-z_]+(?:\.[a-z_0-9]+)+)\}")


def filled(text: str, params: Params) -> str:
    """`text` with each `{section.key}` replaced by the profile's value."""
    return _PLACEHOLDER.sub(lambda m: shown(value(params, m.group(1))), text)


def markdown_table(paper: Params, plus: Params) -> str:
    """docs/fidelity.md's table, from the declaration and the two profiles."""
    lines = ["| aspect | released code | `paper.yaml` | `paper_plus.yaml` | why |",
             "| --- | --- | --- | --- | --- |"]
    for d in DIFFERENCES:
        in_paper = filled(d.paper, paper)
        in_plus = SAME if d.plus == SAME else filled(d.plus, plus)
        lines.append(f"| {d.aspect} | {d.released} | {in_paper} | {in_plus} | {d.why} |")
    return "\n".join(lines) + "\n"


def full_table(full: Params) -> str:
    """The rows where params/paper_full.yaml differs from paper.yaml, as a markdown table."""
    lines = ["| aspect | released code | `paper_full.yaml` |", "| --- | --- | --- |"]
    lines += [f"| {d.aspect} | {d.released} | {filled(d.full, full)} |"
              for d in DIFFERENCES if d.full != SAME]
    return "\n".join(lines) + "\n"


def full_pinned_switches() -> dict[str, Any]:
    """Every released value that params/paper_full.yaml must take, with paper.yaml's pins
    that it keeps (its own override them)."""
    pins = {key: released for d in DIFFERENCES for key, released in d.pinned.items()
            if d.full == SAME}
    for d in DIFFERENCES:
        pins.update(d.full_pinned)
    return pins


def pinned_switches() -> dict[str, Any]:
    """Every switch whose released value is declared, and that value."""
    return {key: released for d in DIFFERENCES for key, released in d.pinned.items()}


def switch_rows(params: Params) -> list[dict[str, Any]]:
    """A run's value of each declared switch beside the released one (notebooks 02 and 05)."""
    return [{"switch": key, "this run": value(params, key), "released": released,
             "as released": value(params, key) == released}
            for key, released in pinned_switches().items()]
