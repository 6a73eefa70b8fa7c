"""The command-line tools: ``python tools/<name>.py --help``.  Each parses its command line
and calls the library (``main(argv=None) -> int``, the exit code).  The tools that run models
on the CPU (predict) import torch only after parsing and after
:func:`detr_irpe.machine.memory.configure_memory`."""
