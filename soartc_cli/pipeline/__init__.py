"""Many images through one job: per-image work, workers, the run, resume, inspection."""
