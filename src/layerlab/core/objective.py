"""What the model is trained against: the loss node, the targets it needs, and accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from layerlab.core.datasets import Dataset, DatasetError
from layerlab.core.spec import Shape, fmt_shape

CLASS_LOSSES = ("CrossEntropyLoss", "NLLLoss")


@dataclass
class Objective:
    """Turns dataset targets into what the loss wants and scores predictions."""

    loss: nn.Module
    loss_type: str
    encoding: str  # "index": class ids; "onehot": float one-hot; "binary": float [N, 1];
    #                "values": regression targets as they are
    classes: int

    def target(self, y: torch.Tensor) -> torch.Tensor:
        if self.encoding == "onehot":
            return nn.functional.one_hot(y, self.classes).to(torch.float32)
        if self.encoding == "binary":
            return y.to(torch.float32).unsqueeze(1)
        return y

    @property
    def logits(self) -> bool:
        """Whether a binary output is a logit (threshold 0) rather than a probability or a
        regressed target in [0, 1] (threshold 0.5)."""
        return self.loss_type == "BCEWithLogitsLoss"

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """The class id each row of `output` predicts: the one notion of a prediction that
        accuracy and the confusion matrix share."""
        if self.encoding == "values":
            raise ValueError("a regression objective predicts values, not classes")
        if self.encoding == "binary":
            return (output[:, 0] > (0.0 if self.logits else 0.5)).to(torch.int64)
        return output.argmax(dim=1)

    def correct(self, output: torch.Tensor, y: torch.Tensor) -> float | None:
        """How many samples are right, or None for regression. A sample with a target per
        position (next-token prediction) counts the share of its positions that are right,
        so that dividing by the samples gives the accuracy per token."""
        if self.encoding == "values":
            return None
        hits = (self.predict(output) == y).to(torch.float32)
        return float(hits.flatten(1).mean(1).sum()) if hits.dim() > 1 else float(hits.sum())

def make_objective(loss_type: str, loss: nn.Module, output_node: str, output_shape: Shape,
                   data: Dataset) -> Objective:
    """Match the loss node and the model's output with the dataset; refuse what cannot fit."""
    classes = len(data.classes)
    out = fmt_shape(output_shape)
    if data.task == "classification":
        if loss_type in CLASS_LOSSES:
            _check_positions(loss_type, output_node, output_shape, data)
            if not output_shape or output_shape[0] < classes:
                raise DatasetError(f"{loss_type} needs one score per class: dataset "
                                   f"{data.name} has {classes} classes, but {output_node} "
                                   f"gives {out}")
            return Objective(loss, loss_type, "index", classes)
        if output_shape == (classes,):
            return Objective(loss, loss_type, "onehot", classes)
        if output_shape == (1,) and classes == 2:
            return Objective(loss, loss_type, "binary", classes)
        raise DatasetError(f"{loss_type} on the {classes} classes of dataset {data.name} "
                           f"needs an output of [{classes}] (one-hot) or [1] (two classes), "
                           f"but {output_node} gives {out}")
    if loss_type in CLASS_LOSSES:
        raise DatasetError(f"{loss_type} needs class labels, but dataset {data.name} has "
                           "real-valued targets; use MSELoss or L1Loss")
    target_shape = tuple(data.y.shape[1:])
    if output_shape != target_shape:
        raise DatasetError(f"dataset {data.name} has targets of shape {fmt_shape(target_shape)}"
                           f", but {output_node} gives {out}")
    return Objective(loss, loss_type, "values", 0)


def _check_positions(loss_type: str, output_node: str, output_shape: Shape,
                     data: Dataset) -> None:
    """Targets per position ([T], next-token prediction) need scores [C, T], classes first
    as torch's loss reads them; a [T, C] output is refused with the fix."""
    positions = tuple(data.y.shape[1:])
    if not positions or tuple(output_shape[1:]) == positions:
        return
    if tuple(output_shape[:-1]) == positions:
        raise DatasetError(f"{loss_type} reads the classes in the first dimension, but "
                           f"{output_node} gives {fmt_shape(output_shape)} (positions first)"
                           f" for dataset {data.name}'s targets of "
                           f"{fmt_shape(positions)}; add a Transpose (dim0=1, dim1=2) "
                           "before the loss")
    raise DatasetError(f"dataset {data.name} has a target at each of "
                       f"{fmt_shape(positions)} positions, but {output_node} gives "
                       f"{fmt_shape(output_shape)}; {loss_type} needs [classes, "
                       f"{', '.join(map(str, positions))}]")
