"""The configs shipped with the package (Hydra reads them as the module ablation.conf when an entry point is
started as a console script)."""
