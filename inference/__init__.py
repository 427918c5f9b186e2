"""After training: predict images with a trained model file, export it to ONNX (`python run.py predict|export`).

A layer beside training: it uses models (load_trained), data (image files) and core, never the
training machinery, so a deployed model needs none of it.
"""
