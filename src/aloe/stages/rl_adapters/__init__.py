"""The simulated-user environment (`aloe.stages.environment`) for distributed RL engines that labs
already run at scale: `verl` holds an interaction for verl's multi-turn rollout and a reward
function over its turn scores; `dataset` writes verl's training rows for a run's personas.
Neither engine is a dependency: each adapter speaks the engine's contract with plain Python."""
