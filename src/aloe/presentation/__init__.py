"""What a person reads: tables, figures, the report, the comparison, the viewer, the rating kit and
the pages' own markup.
"""
