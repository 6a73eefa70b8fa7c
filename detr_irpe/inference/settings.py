"""What prediction uses unless told otherwise, and what it accepts (``Detector.predict``,
``tools/predict.py``, the end-of-run pictures).  Plain Python: the tool's command line takes
its defaults from here before torch is imported."""

# Detections with a lower score are left out; images per forward pass.
THRESHOLD, BATCH_SIZE = 0.5, 4


def check_prediction(threshold: float, batch_size: int) -> None:
    """A score threshold in [0, 1] (not NaN) and at least one image per forward pass."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"--threshold {threshold}: must be a score in [0, 1]")
    if batch_size < 1:
        raise ValueError(f"--batch_size {batch_size}: must be >= 1")
