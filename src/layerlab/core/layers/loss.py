"""Loss functions: terminal nodes that compare the model's output with the target."""

from __future__ import annotations

from torch import nn

from layerlab.core.spec import Ctx, LayerSpec, Param, Shape, ctor, need_rank


def _class_scores(ctx: Ctx) -> Shape:
    need_rank(ctx, (1, 2, 3), "[C] class-score")
    return ()


def _scalar(ctx: Ctx) -> Shape:
    return ()


LABEL_SMOOTHING = Param("label_smoothing", "float", 0.0, minimum=0.0, maximum=1.0,
                        help="Spread this much of the target probability over all classes.")


def _loss(name: str, description: str, formula: str, cls: type[nn.Module],
          params: tuple[Param, ...] = (), classes: bool = False) -> LayerSpec:
    return LayerSpec(
        name, "loss", description, formula, params=params,
        infer=_class_scores if classes else _scalar,
        build=lambda c: ctor(cls, **c.params), is_loss=True,
    )


SPECS = [
    _loss("CrossEntropyLoss", "For classification: the negative log of the probability "
          "softmax gives the true class. Takes raw scores (logits).",
          "L = -mean(log softmax(ŷ)[y])", nn.CrossEntropyLoss, (LABEL_SMOOTHING,),
          classes=True),
    _loss("MSELoss", "For regression: the mean squared difference from the target.",
          "L = mean((y - ŷ)²)", nn.MSELoss),
    _loss("BCEWithLogitsLoss", "For yes/no targets in [0, 1]: binary cross-entropy of the "
          "sigmoid of the output, computed stably.",
          "L = -mean(y·log σ(ŷ) + (1 - y)·log(1 - σ(ŷ)))", nn.BCEWithLogitsLoss),
    _loss("L1Loss", "For regression: the mean absolute difference; less sensitive to "
          "outliers than MSE.", "L = mean(|y - ŷ|)", nn.L1Loss),
    _loss("NLLLoss", "Negative log-likelihood of the true class; takes log-probabilities, "
          "so put LogSoftmax before it.", "L = -mean(ŷ[y])", nn.NLLLoss, classes=True),
]
