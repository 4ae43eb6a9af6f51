"""Stage 4, beside DPO: turn-level GRPO of the policy against the simulated users
(`aloe.stages.environment`), in QLoRA, from the SFT adapter (`grpo.start_from: sft`) or the base.

Each training row names one dialogue (a training persona of stage 1, after the leakage screen,
and a seed: one simulated user) and a turn t. Its rollout (TRL's `rollout_func`) plays turns
1..t-1 of that dialogue with the CURRENT policy (the trainer's model, sampling), the
environment giving the user's next message after each reply (`UserEnvironment.advance`), then
samples G = `grpo.num_generations` replies to turn t from the same history; each reply is
scored by the environment without advancing the dialogue (`UserEnvironment.score`). GRPO then
compares the G replies of one turn with each other (the group's mean and spread are the
baseline), so no value model is trained. The rewards come back apart, one reward function each
(`judge`: the protocol's judge score; `inference`: the inference judge's 0-1 accuracy of a
`<profile>...</profile>` the reply states; `future`: the judge's mean score of K sampled future
turns), weighted by `grpo.rewards`; TRL logs each one's mean per step.

How this differs from the methods it borrows from:
- RLPA (arXiv 2505.15456) trains with PPO on whole dialogues: a value model, one return per
  dialogue built from every turn's reward (the judge's and the profile reward). Here every
  turn is a bandit step of its own: the advantage is relative to the other replies of the
  same turn, with no critic and no credit assignment across turns.
- CollabLLM (arXiv 2502.00640) makes a single turn's reward multi-turn-aware by sampling
  future turns, then trains with DPO on pairs ranked by that reward (or PPO). Here the same
  kind of future-sampled reward (`grpo.rewards.future`, K = `future_turns`) is one of the
  rewards of an on-policy group, scored by the protocol's own judge instead of task,
  efficiency and interactivity metrics.

The environment's requests go through the LLM layer (cache, budget, retries, usage ledger
under the stage name `grpo`). The layer's clients belong to one event loop, so the stage runs
one loop on a helper thread for its whole life and hands each rollout's requests to it
(`EventLoopThread`); the trainer's own thread only waits for them.

Outputs, like SFT's and DPO's (`aloe.stages.training.train_stage`): `adapters/grpo/` (the adapter,
tokenizer, `training_log.csv` with loss and each reward's mean per step,
`training_stats.json`, the model card), its checkpoints in `training/grpo/` every `save_steps`
(a killed run resumes from the last one).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import re
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aloe.core import protocols
from aloe.core.config import GRPOConfig, Params
from aloe.core.errors import BadInputError
from aloe.core.progress import reporter
from aloe.core.records import read_records
from aloe.core.schemas import persona_check
from aloe.llm import LLM, open_llm
from aloe.roles.simulator import simulator_messages
from aloe.stages.environment import Dialogue, Rewards, UserEnvironment
from aloe.stages.plan_lengths import Lengths
from aloe.stages.planned import PlannedRequest, history_slots, persona_slots
from aloe.stages.policy import Device
from aloe.stages.qlora import build_grpo_trainer, load_tokenizer, trainer_arguments
from aloe.stages.training import (
    TrainResult,
    progress_callback,
    start_model,
    train_stage,
    validate_model_inputs,
)

log = logging.getLogger("aloe.stages.training")

STAGE = "grpo"
PROFILE = re.compile(r"<profile>(.*?)</profile>", re.DOTALL | re.IGNORECASE)
T = TypeVar("T")


class NoTrainingPersonas(BadInputError):
    """GRPO has no training persona to play: stage 1 has not run, or kept none."""


# ------------------------------------------------------------------------------------------
# The rows: a dialogue (training persona, seed) and a turn
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TurnRow:
    """One training row: the turn `turn` of the dialogue of `persona` with user `seed`."""

    persona: dict[str, Any]
    seed: int
    turn: int

    @property
    def key(self) -> str:
        """The row's prompt in the dataset: TRL hands the rollout only the prompts, so the
        prompt names the row (and reads in TRL's completion logs)."""
        return f"persona {self.persona['id']} | user {self.seed} | turn {self.turn}"


def training_personas(params: Params) -> list[dict[str, Any]]:
    """Stage 1's training personas (`personas.jsonl`, after the leakage screen), never the
    benchmark's; refused in one line when there are none."""
    path = params.layout.personas
    personas = read_records(path, check=persona_check())
    if not personas:
        raise NoTrainingPersonas(f"{path}: no training personas for grpo: run stage 1 "
                                 "(notebook 01_personas) first; GRPO plays the training "
                                 "personas only, never the benchmark's")
    return personas


def turn_rows(params: Params, personas: Sequence[dict[str, Any]]) -> list[TurnRow]:
    """Every persona x `dialogues_per_persona` seeds x turns 1..`grpo.turns`."""
    cfg = params.grpo
    return [TurnRow(p, seed, turn) for p in personas for seed in range(cfg.dialogues_per_persona)
            for turn in range(1, cfg.turns + 1)]


# ------------------------------------------------------------------------------------------
# The requests it sends (for `aloe plan`)
# ------------------------------------------------------------------------------------------
def grpo_requests(params: Params, personas: int | None = None) -> dict[str, int]:
    """An upper bound of the requests the stage sends per role (`user`, `judge`), the cache
    aside: per trained turn, the user's messages of the turns before it (and the first), and
    for each of the G replies the judge, the inference judge, and K future turns (user and
    judge) per sampled future. `personas`: the training personas (None: stage 1's file when it
    exists, else its target, profiles x pairings)."""
    cfg = params.grpo
    prompts = trained_turns(params, personas)
    on = cfg.rewards.on()
    future = cfg.future_samples * cfg.future_turns if "future" in on else 0
    judge_per_reply = int("judge" in on) + int("inference" in on) + future
    return {"user": prompts * (cfg.turns + cfg.num_generations * future),
            "judge": prompts * cfg.num_generations * judge_per_reply}


def trained_turns(params: Params, personas: int | None = None) -> int:
    """How many turns the trainer rolls out (each: G sampled replies), from the training
    personas (None: stage 1's file when it exists, else its target, profiles x pairings)."""
    cfg = params.grpo
    if personas is None:
        found = read_records(params.layout.personas, check=persona_check())
        p = params.personas
        personas = len(found) or p.profiles_target * p.pairings_per_profile
    return _trained_prompts(cfg, personas * cfg.dialogues_per_persona * cfg.turns)


def planned_requests(params: Params, lengths: Lengths) -> list[PlannedRequest]:
    """The stage's requests for `aloe plan` (none when `grpo.enabled` is false): the counts of
    `grpo_requests` (an upper bound: the cache aside), each prompt at its longest turn, the
    simulated user's and the protocol judge's requests as the environment builds them."""
    cfg = params.grpo
    if not cfg.enabled:
        return []
    counts = grpo_requests(params)
    protocol = protocols.get(params.evaluation.protocol)
    user, reply = lengths.completion["user"], float(cfg.trainer["max_completion_length"])
    counter = lengths.counter()
    persona = persona_slots(counter, lengths.benchmark)
    before = history_slots(counter, cfg.turns - 1, user, reply)
    history = before + [{"role": "user", "content": counter.slot(user)}]
    style = protocol.simulator_for(params.evaluation.prompt_style)
    asking = counter.tokens(simulator_messages(persona, before, style=style,
                                               length_request=False))
    scoring = counter.tokens(protocol.judge_messages(persona, history, counter.slot(reply),
                                                     params.evaluation.judge_context))
    return [PlannedRequest("user", counts["user"], asking, user, turn=cfg.turns),
            PlannedRequest("judge", counts["judge"], scoring, lengths.completion["judge"],
                           turn=cfg.turns)]


def grpo_tokens(params: Params, lengths: Lengths) -> tuple[float, float]:
    """The policy's tokens over the stage (for GPU hours): generated (the replies of the turns
    before each trained one, and G replies to it) and trained (G replies with their chat)."""
    cfg = params.grpo
    if not cfg.enabled:
        return 0.0, 0.0
    prompts = trained_turns(params)
    reply = float(cfg.trainer["max_completion_length"])
    chat = cfg.turns * (lengths.completion["user"] + reply) / 2  # the mean turn's history
    generated = prompts * ((cfg.turns - 1) / 2 + cfg.num_generations) * reply
    return generated, prompts * cfg.num_generations * (chat + reply)


def _trained_prompts(cfg: GRPOConfig, rows: int) -> int:
    """How many turns the trainer rolls out: `max_steps` batches of (batch / G) turns, or
    every row once per epoch."""
    t = cfg.trainer
    per_step = int(t["per_device_train_batch_size"]) * int(t["gradient_accumulation_steps"])
    if int(t["max_steps"]) > 0:
        iterations = int(t.get("num_iterations", 1))
        return math.ceil(int(t["max_steps"]) / iterations) * per_step // cfg.num_generations
    return math.ceil(rows * float(t["num_train_epochs"]))


# ------------------------------------------------------------------------------------------
# One event loop for the LLM layer, on its own thread
# ------------------------------------------------------------------------------------------
class EventLoopThread:
    """An asyncio loop on a helper thread for the stage's life: the LLM layer's clients and
    semaphores belong to one loop, and the trainer calls the rollout from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aloe-grpo-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def close(self, llm: LLM | None = None) -> None:
        if llm is not None:
            self.run(llm.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


# ------------------------------------------------------------------------------------------
# The rollout
# ------------------------------------------------------------------------------------------
def split_reply(text: str) -> tuple[str, str | None]:
    """A sampled reply as the user sees it, and what it says it inferred (a
    `<profile>...</profile>` part, RLPA's format; None when it states none)."""
    found = PROFILE.search(text)
    if not found:
        return text.strip(), None
    return PROFILE.sub("", text).strip(), found.group(1).strip()


class PolicySampler:
    """The current policy, sampling: the trainer's model with its generation settings, on the
    chat-templated history (its newest `max_prompt_length` tokens). The rollout gives it the
    trainer at each call; generation is one at a time (the future reward's replies come from
    the loop's worker threads)."""

    def __init__(self, max_prompt_length: int) -> None:
        self.max_prompt_length = max_prompt_length
        self.trainer: Any = None
        self._generating = threading.Lock()

    def prompt_ids(self, history: list[dict[str, str]]) -> list[int]:
        tokenizer = self.trainer.processing_class
        text = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids[-self.max_prompt_length:])

    def decode(self, ids: list[int]) -> str:
        return self.trainer.processing_class.decode(ids, skip_special_tokens=True)

    def sample(self, prompt_ids: list[list[int]]) -> tuple[list[list[int]], list[list[float]]]:
        """One completion per prompt, and its tokens' log-probabilities."""
        with self._generating:
            return sample_completions(self.trainer, prompt_ids)

    async def reply(self, history: list[dict[str, str]]) -> str:
        """The environment's `policy` (the future reward's replies), generated off the loop's
        thread so that requests keep flowing meanwhile."""
        ids, _ = await asyncio.to_thread(self.sample, [self.prompt_ids(history)])
        return split_reply(self.decode(ids[0]))[0]


class TurnRollout:
    """TRL's `rollout_func`: for each row of the batch, its dialogue played by the current
    policy up to the row's turn, then one sampled reply per repetition of the row (TRL repeats
    each row G times, one after another), each scored by the environment (see the module's
    text). Extra keys of its answer (one per reward) go to the reward functions."""

    def __init__(self, env: UserEnvironment, policy: PolicySampler, loop: EventLoopThread,
                 rows: Sequence[TurnRow], rewards: Sequence[str]) -> None:
        self.env, self.policy, self.loop = env, policy, loop
        self.rows = {row.key: row for row in rows}
        self.rewards = list(rewards)

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        self.policy.trainer = trainer
        keys = [self._key(prompt) for prompt in prompts]
        unique = list(dict.fromkeys(keys))
        started = self.loop.run(self.env.reset_many([self.rows[k].persona for k in unique],
                                                    [self.rows[k].seed for k in unique]))
        dialogues = dict(zip(unique, started))
        self._play_to_turn(dialogues)
        prompt_ids = [self.policy.prompt_ids(dialogues[key].history) for key in keys]
        completion_ids, logprobs = self.policy.sample(prompt_ids)
        texts = [split_reply(self.policy.decode(ids)) for ids in completion_ids]
        scored = self.loop.run(_gather(self.env.score(dialogues[key], reply, inferred)
                                       for key, (reply, inferred) in zip(keys, texts)))
        out: dict[str, list[Any]] = {"prompt_ids": prompt_ids, "completion_ids": completion_ids,
                                     "logprobs": logprobs}
        for name in self.rewards:
            out[name] = [rewards.get(name) for rewards in scored]
        return out

    def _key(self, prompt: Any) -> str:
        key = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        if key not in self.rows:
            raise KeyError(f"grpo rollout: the prompt {key!r} names no training row")
        return key

    def _play_to_turn(self, dialogues: dict[str, Dialogue]) -> None:
        """The turns before each row's own, every dialogue in step: the policy samples a
        reply, the simulated user answers it (nothing is scored)."""
        while True:
            behind = [d for key, d in dialogues.items() if d.turn < self.rows[key].turn]
            if not behind:
                return
            ids, _ = self.policy.sample([self.policy.prompt_ids(d.history) for d in behind])
            replies = [split_reply(self.policy.decode(x))[0] for x in ids]
            self.loop.run(_gather(self.env.advance(d, reply)
                                  for d, reply in zip(behind, replies)))


async def _gather(work: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    return list(await asyncio.gather(*work))


def sample_completions(trainer: Any,
                       prompt_ids: list[list[int]]) -> tuple[list[list[int]], list[list[float]]]:
    """TRL's own generation path for a rollout (the trainer's model unwrapped, its
    `generation_config`), with per-token log-probabilities kept from the scores."""
    import torch
    from trl.models.utils import unwrap_model_for_generation

    pad = trainer.processing_class.pad_token_id
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, ids in enumerate(prompt_ids):  # left padding: every prompt ends where replies start
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        mask[i, width - len(ids):] = 1
    device = trainer.accelerator.device
    config = copy.deepcopy(trainer.generation_config)  # the sampling settings, and the scores
    config.update(return_dict_in_generate=True, output_scores=True)
    with (unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator,
            generation_kwargs=trainer.generation_kwargs,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs) as model,
          torch.no_grad()):
        out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                             generation_config=config)
    sampled = out.sequences[:, width:]
    logps = torch.stack([torch.log_softmax(step.float(), dim=-1)
                         .gather(-1, sampled[:, i:i + 1]).squeeze(-1)
                         for i, step in enumerate(out.scores)], dim=1)
    eos = set(trainer.eos_token_ids)
    completions, logprobs = [], []
    for tokens, token_logps in zip(sampled.tolist(), logps.tolist()):
        end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
        completions.append(tokens[:end])
        logprobs.append(token_logps[:end])
    return completions, logprobs


def reward_function(name: str) -> Callable[..., list[float | None]]:
    """The reward function of one of the environment's rewards: reads the rollout's field of
    that name (None where its judge's answer was unreadable: TRL leaves it out of the group's
    statistics, and a reply no reward could score gets no advantage). Named after the reward,
    so TRL logs `rewards/NAME/mean` apart; it also logs `rewards/NAME/unreadable`, the share
    of the step's replies it could not score (the stage's closing line sums them up)."""
    def reward(completions: list[Any], **fields: Any) -> list[float | None]:
        found = list(fields.get(name) or [None] * len(completions))
        log_metric = fields.get("log_metric")
        if log_metric is not None and found:
            log_metric(unreadable_column(name), sum(x is None for x in found) / len(found))
        return found

    reward.__name__ = name
    return reward


def unreadable_column(reward: str) -> str:
    """The training log's column of the share of a step's replies `reward` could not score."""
    return f"rewards/{reward}/unreadable"


def unreadable_shares(log: Any, rewards: Iterable[str]) -> dict[str, float]:
    """Each reward's share of the sampled replies it could not score, over the logged steps
    (`log`: the training log's table), for the rewards that logged one."""
    return {name: round(float(log[unreadable_column(name)].mean()), 4) for name in rewards
            if unreadable_column(name) in log and log[unreadable_column(name)].notna().any()}


def unreadable_line(shares: dict[str, float], steps: int) -> str | None:
    """One line on the rewards whose judge left replies unscored over the run (None when every
    reply was scored): what share, and that those replies did not move the policy."""
    unread = {name: share for name, share in shares.items() if share > 0}
    if not unread:
        return None
    parts = ", ".join(f"{name} {share:.0%}" for name, share in unread.items())
    return (f"grpo: unreadable judge answers for part of the sampled replies ({parts} over "
            f"{steps} step{'s' * (steps != 1)}); a reply no reward scored got no advantage")


# ------------------------------------------------------------------------------------------
# The stage
# ------------------------------------------------------------------------------------------
def validate_grpo_inputs(params: Params, stage: str = STAGE) -> str:
    """What the stage needs before it loads anything: training personas, and the model
    checks of every stage (base model, optimiser, the SFT adapter for
    `start_from: sft`). Returns the base model."""
    training_personas(params)
    return validate_model_inputs(params, stage)


def environment(params: Params, llm: LLM, policy: Any = None) -> UserEnvironment:
    """The simulated users GRPO learns from: the evaluation's protocol, prompt style and judge
    temperature (what the policy is measured on), over `grpo.turns` turns."""
    cfg, e = params.grpo, params.evaluation
    on = cfg.rewards.on()
    rewards = Rewards(judge="judge" in on, inference="inference" in on,
                      future_turns=cfg.future_turns if "future" in on else 0,
                      future_samples=cfg.future_samples)
    return UserEnvironment(llm, protocols.get(e.protocol), turns=cfg.turns,
                           prompt_style=e.prompt_style, rewards=rewards,
                           judge_temperature=e.judge_temperature, policy=policy)


def train_grpo(params: Params, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Stage 4 (beside DPO): GRPO against the simulated users, or the saved result when the
    adapter is already finished."""
    loop = EventLoopThread()
    with open_llm(params, STAGE) as llm:
        try:
            def build(params: Params, stage: str, base: str, device: Device,
                      callbacks: Sequence[Any]) -> Any:
                return _trainer(params, base, device, callbacks, llm, loop)

            result = train_stage(params, STAGE, callbacks, validate=validate_grpo_inputs,
                                 build=build)
        finally:
            loop.close(llm)
    note = None if result.skipped else unreadable_line(
        result.stats.get("unreadable_replies") or {}, len(result.log))
    if note:
        log.warning(note)
    return result


def _trainer(params: Params, base: str, device: Device, callbacks: Sequence[Any], llm: LLM,
             loop: EventLoopThread) -> Any:
    from datasets import Dataset

    cfg = params.grpo
    personas = training_personas(params)
    rows = turn_rows(params, personas)
    weights = cfg.rewards.on()
    policy = PolicySampler(cfg.max_prompt_length)
    rollout = TurnRollout(environment(params, llm, policy=policy.reply), policy, loop, rows,
                          list(weights))
    args = trainer_arguments(STAGE, cfg, params.layout.checkpoints(STAGE), device,
                             seed=params.run.seed, num_generations=cfg.num_generations,
                             reward_weights=list(weights.values()))
    live = progress_callback(reporter(params.layout.progress, "steps"))
    trainer = build_grpo_trainer(
        start_model(params, STAGE, base, device), load_tokenizer(base),
        Dataset.from_list([{"prompt": row.key} for row in rows]), args, cfg,
        [reward_function(name) for name in weights], rollout, [*callbacks, live],
        tensorboard_dir=params.layout.tensorboard(STAGE))
    trainer.aloe_stats = lambda history: {  # into training_stats.json and the model card
        "rewards": weights, "num_generations": cfg.num_generations, "turns": cfg.turns,
        "protocol": params.evaluation.protocol, "training_personas": len(personas),
        "dialogues": len(personas) * cfg.dialogues_per_persona, "rows": len(rows),
        # over the whole training: the log history comes back with a checkpoint
        "unreadable_replies": unreadable_shares(history, weights)}
    return trainer
