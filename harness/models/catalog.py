"""What each demo model is, without importing TensorFlow (the CLI lists these cheaply)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    input_name: str
    input_shape: tuple[int, ...]  # without the batch dimension
    output_name: str
    description: str


MODELS = {
    m.name: m
    for m in (
        ModelInfo("mlp", "x", (16,), "y", "tiny MLP (16 -> 32 -> 4); for fast tests"),
        ModelInfo(
            "ranker",
            "features",
            (512,),
            "score",
            "wide ranking MLP: 512 features, four dense layers of 2048, sigmoid score; where CPU batching pays most",
        ),
        ModelInfo(
            "mobilenet_v2",
            "image",
            (128, 128, 3),
            "probabilities",
            "MobileNetV2 at 128x128x3, 1000 classes",
        ),
        ModelInfo(
            "resnet50",
            "image",
            (224, 224, 3),
            "probabilities",
            "ResNet50 at 224x224x3, 1000 classes",
        ),
    )
}
