"""The verdict: measured samples and their reference in, a verdict out. Pure: no pytest, no vLLM, no runner,
no files.

Modules: outcomes (the words of every verdict), metric (one metric against its reference), item (an item's
Decision and what to measure next), config (a config's items together), text (the tables a verdict shows).
"""
