"""Runnable examples of custom handlers: `python run.py --handler examples.<module>:attach`."""
