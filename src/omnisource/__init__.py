"""omnisource: train video classifiers from a small labeled video set plus noisy web data."""
__version__ = "0.1.0"


def _single_threaded_opencv() -> None:
    # OpenCV's thread pool, once started in a parent process, deadlocks in forked data-loader
    # workers; decoding runs one process per core anyway (docs/concepts.md, "What is slow"), so keep cv2 serial.
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a core dependency
        return
    cv2.setNumThreads(1)


_single_threaded_opencv()
