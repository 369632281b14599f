"""omnisource: train video classifiers from a small labeled video set plus noisy web data.

``from omnisource import load_classifier`` applies a trained model (see omnisource.serve);
``omnisource.stages`` holds every stage as a function.
"""
__version__ = "0.1.0"
__all__ = ["load_classifier", "__version__"]


def __getattr__(name: str):
    # Lazy: `import omnisource` stays light (no torch) until the API is used.
    if name == "load_classifier":
        from .serve.predict import load_classifier

        return load_classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
