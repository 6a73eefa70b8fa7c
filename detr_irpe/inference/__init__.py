"""Inference on image files: the :class:`~detr_irpe.inference.detector.Detector`, image
input, the folder job of ``tools/predict.py``, ONNX export and category names."""
