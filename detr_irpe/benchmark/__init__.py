"""What ``python -m detr_irpe.tools.benchmark`` and ``python -m detr_irpe.tools.gpu_check``
measure, kept apart from their command lines:

- ``workload``: the models, the batch and the training step that are timed;
- ``timing``: interleaved repetitions, medians and ratios, the matrix-multiply peak;
- ``sections``: the CPU/GPU sections of the benchmark (attention, model, FLOPs);
- ``memory``: the peak memory of a training step, in a fresh process;
- ``targets``: the speed targets and their verdicts (no torch);
- ``coco_eval``: COCO evaluation time per backend on a generated set;
- ``gpu``: the sections of the GPU check.
"""
