"""The assignment's network. nn.Modules only: nothing here imports the rest of the project."""
from models.resnet import CustomResNet, ResBlock, count_parameters
from models.trained import load_trained

__all__ = ["CustomResNet", "ResBlock", "count_parameters", "load_trained"]
