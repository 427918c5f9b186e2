"""Ignite Engines: train step, evaluator, LR range test, One Cycle schedule, and the run builder.

Kept import-free so `engine.errors` can be imported from `data` without a cycle.
"""
