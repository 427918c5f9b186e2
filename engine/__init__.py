"""Ignite Engines: the train step, the evaluator, the LR range test and its readings, the One Cycle schedule,
and the run's Config. Imports only `core`, `data` and `models` (the handlers and the composition root,
`training`, sit above it).
"""
