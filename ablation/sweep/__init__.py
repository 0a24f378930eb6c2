"""Sweeps: the designs the ablation sweeper expands, the jobs it hands the launcher, the parent run, launchers."""
