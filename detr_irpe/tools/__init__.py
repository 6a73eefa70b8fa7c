"""The command-line tools, one module each, with ``main(argv=None) -> int`` (the exit code).

    python -m detr_irpe.tools.predict --checkpoint C --images photos/ --out preds
    python tools/predict.py ...        # the same: tools/<name>.py only calls main()

Each module parses its command line and calls the library.  The tools that time or run
models on the CPU (predict, benchmark, gpu_check) import torch only after parsing and
after :func:`detr_irpe.process_memory.configure_memory`.
"""
