"""The core every layer stands on: parameter files (`config/`), the run's files (`layout`), records
and their schemas, errors, chat messages, the evaluation protocols, the embedded model's files
and the run manifest. Imports nothing above.
"""
