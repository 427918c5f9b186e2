"""Datasets (CIFAR-10, folder, fake), channel statistics, albumentations transforms, loaders."""
