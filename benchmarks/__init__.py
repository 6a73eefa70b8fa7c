"""Speed and memory measurements, kept out of the library (run from the repository root):

    python -m benchmarks.speed            CPU/GPU sections: attention, model, FLOPs, memory
    python -m benchmarks.gpu_check        the GPU check: CUDA op, training, compile
    python -m benchmarks.compare_official our code against the official code, side by side
    python -m benchmarks.coco_eval        COCO evaluation time per backend
    python -m benchmarks.count_ops        the operations dispatched by one training step

The modules they share: ``workload`` (the models, batch and step that are timed),
``timing`` (interleaved repetitions, medians, ratios, the matrix-multiply peak),
``sections``, ``memory`` (a step's peak memory in a fresh process), ``targets`` (the speed
targets and their verdicts), ``coco_eval``, ``gpu``, ``gpu_training``, ``gpu_reruns``,
``official``, ``compiled``, ``dispatch``.  The figures: docs/benchmarks.md.
"""
