"""The LLM roles the stages share: the simulated user, the judges, stage 2's inducer and assistant
requests. Above `core` and `llm`.
"""
