"""PNG pictures: detections drawn on images, training curves, iRPE tables."""
