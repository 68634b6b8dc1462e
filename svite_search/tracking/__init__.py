"""MLflow tracking: single runs, and a study as a parent run with one nested run per trial."""
