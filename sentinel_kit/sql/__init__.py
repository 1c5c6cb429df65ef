"""SQL migrations shipped with the package, one folder per dialect, applied in name order."""
