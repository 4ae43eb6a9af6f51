"""The stages of the workbook (personas, conversations, SFT/DPO/GRPO training, evaluation) and what
they need: the policy, the environment, the RL adapters. Stages talk to each other only through
the run's files.
"""
