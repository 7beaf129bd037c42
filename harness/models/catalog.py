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
    input_dtype: str = "float32"  # TensorFlow's name: "float32", "string"


# image_jpeg: the size each decoded JPEG is resized to, and the classes it scores
JPEG_SIZE = 32
JPEG_CLASSES = 10

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
        ModelInfo(
            "image_jpeg",
            "image_bytes",
            (),
            "scores",
            f"encoded JPEGs (DT_STRING, as TF Serving's resnet export takes them), decoded and "
            f"resized to {JPEG_SIZE}x{JPEG_SIZE} in the graph, a small conv net, {JPEG_CLASSES} "
            "scores; needs a payload (harness model payload image_jpeg)",
            input_dtype="string",
        ),
    )
}
