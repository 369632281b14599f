"""Using trained models: ``load_classifier`` / ``omnisource predict`` (predict.py) and
``omnisource export`` to ONNX or torch.export (export.py)."""
from .predict import Classifier, load_classifier

__all__ = ["Classifier", "load_classifier"]
