"""What users touch: the command line, terminal tables, the notebook API."""
