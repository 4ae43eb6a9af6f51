"""Pure analysis: AL(k) and the other measures, bootstrap intervals, agreement, findings in words.
Records in, numbers out; above `core`.
"""
