"""The report: read the runs from MLflow, decide against the baseline, render markdown, HTML and figures."""
