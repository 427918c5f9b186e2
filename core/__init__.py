"""The base every layer may import: the user-error type and the small distributed helpers.

It imports nothing of the project (models, data, engine, handlers, training): see README, Architecture.
"""
