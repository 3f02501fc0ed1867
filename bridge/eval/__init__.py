"""`llm2mqtt eval`: how often a rule is right on a labelled set, per model and prompt variant.

A tool above the pipeline: it runs inputs through the same code as `llm2mqtt try` and
publishes nothing. The CLI imports it only when the command is used.
"""
