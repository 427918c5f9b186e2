"""Grad-CAM of the misclassified dump: where the model looked, for the class it chose and for the true one.

OUTPUT/misclassified/gradcam_epoch_XX.png (and TensorBoard image test/misclassified_gradcam): for each
image of the dump's grid (the highest-loss mistakes), its Grad-CAM heat map for the predicted class
and, beside it, for the true class. Computed only when a dump is written, on those few images (one
forward and one backward pass for all of them together), so the training and evaluation steps are
untouched. Needs the optional `explain` extra (grad-cam, module pytorch_grad_cam); without it the grid
is skipped with one info line.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from handlers.misclassified import FOLDER, captioned_figure
from run_folder.plots import render_figure, save_png

log = logging.getLogger(__name__)

INSTALL = "pip install -e .[explain]"


def gradcam_available() -> bool:
    return importlib.util.find_spec("pytorch_grad_cam") is not None


def target_layer(model: nn.Module) -> nn.Module:
    """layer3: the last convolutional block (with its residual), the input of the MaxPool 4 before the FC.

    Grad-CAM needs a map that is both about the classes and still spatial. layer3's output is the
    last such map: what follows (MaxPool 4 to 1x1, then the FC) has no layout left. It is 4x4 at a
    32x32 input (one cell per 8x8 pixels), coarse but class-specific; layer2 (8x8) is finer but its
    features are less about the class, so its maps say less about the decision (tests/test_gradcam.py's
    quadrant task: 0.55 to 0.65 of the heat on the deciding quadrant at layer3, 0.28 to 0.49 at layer2).
    """
    return model.layer3


def gradcam_maps(model: nn.Module, images: np.ndarray, mean, std, classes) -> np.ndarray:
    """(N, H, W) Grad-CAM maps in [0, 1] (each scaled to its own max) of uint8 HWC `images` for `classes`.

    The model runs in eval mode (BatchNorm uses its running statistics and is not updated); its
    train/eval mode and its parameters' .grad are restored afterwards, so a run continues as if this
    had not happened. Pass the plain model, not a DDP wrapper (core.distributed.unwrap); frozen parameters are
    fine.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(mean, device=device).view(1, 3, 1, 1)) / torch.tensor(std, device=device).view(1, 3, 1, 1)
    # A graph even when no parameter needs a gradient (the --ema average's are detached): Grad-CAM needs the
    # target layer's activations to have one.
    x.requires_grad_(True)
    was_training = model.training
    grads = [p.grad for p in model.parameters()]  # GradCAM zeroes them and backpropagates into them
    cam = None
    try:
        with torch.enable_grad():  # an evaluator handler may run under no_grad
            cam = GradCAM(model=model, target_layers=[target_layer(model)])  # sets model.eval()
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    finally:
        if cam is not None:
            cam.activations_and_grads.release()  # remove its hooks from the model
        model.train(was_training)
        for p, g in zip(model.parameters(), grads):
            p.grad = g


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """uint8 HWC image with the heat map (jet colours) blended over it, half and half."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255, heat, use_rgb=True, image_weight=0.5)


class GradCamGrid:
    """The MisclassifiedDump's `explain` callback (rank 0): writes gradcam_epoch_XX.png and the TensorBoard image."""

    def __init__(self, run, tb_logger=None):
        self.run, self.tb_logger = run, tb_logger

    @classmethod
    def if_available(cls, run, tb_logger=None) -> "GradCamGrid | None":
        if gradcam_available():
            return cls(run, tb_logger)
        log.info("grad-cam is not installed: misclassified/gradcam_epoch_XX.png is skipped (%s)", INSTALL)
        return None

    def __call__(self, indices: np.ndarray, predicted: np.ndarray, true: np.ndarray, probability: np.ndarray,
                 epoch: int) -> None:
        data = self.run.data
        images = data.test_x[indices]
        try:
            # Both targets in one pass: the images twice, first for the predicted classes, then the true ones.
            maps = gradcam_maps(self.run.eval_module, np.concatenate([images, images]), data.mean, data.std,
                                np.concatenate([predicted, true]))
        except Exception as e:  # noqa: BLE001 - an explanation must never stop a training run
            log.warning("Grad-CAM of epoch %d skipped: %s: %s", epoch, type(e).__name__, e)
            return
        n = len(images)
        panels, captions = [], []
        for k in range(n):
            panels += [overlay(images[k], maps[k]), overlay(images[k], maps[n + k])]
            captions += [f"pred: {data.classes[predicted[k]]} ({probability[k]:.0%})",
                         f"true: {data.classes[true[k]]}"]
        title = (f"epoch {epoch}: Grad-CAM (layer3) of the {n} highest-loss mistakes: for the predicted class "
                 f"(left) and the true class (right)")
        grid = render_figure(captioned_figure(np.stack(panels), captions, title, columns=8))
        save_png(grid, Path(self.run.output_dir) / FOLDER / f"gradcam_epoch_{epoch:02d}.png")
        if self.tb_logger is not None:
            self.tb_logger.writer.add_image("test/misclassified_gradcam", grid, epoch, dataformats="HWC")
