"""Training: the recipe (``recipe.run``), the epoch loop and evaluation pass (``loop``),
resuming and fine-tuning, the optimiser and schedule, loaders, EMA, the time budget, the log
and the end-of-run report."""
