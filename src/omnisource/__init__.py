"""omnisource: train video classifiers from a small labeled video set plus noisy web data."""
__version__ = "0.1.0"
