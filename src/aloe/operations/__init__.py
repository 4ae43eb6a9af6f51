"""Running the workbook: `aloe` commands, the runner, `aloe plan` and its estimates, the preflight,
stage stamps, spend against the forecast.
"""
