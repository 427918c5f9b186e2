"""What writes the run folder (OUTPUT/): its checks and preparation, summary.json and the CSVs, the plots, report.html,
the best-model file's description, and the reading of the checkpoints there. Plain functions of records and paths:
the handlers in handlers/ call them from Engine events."""
