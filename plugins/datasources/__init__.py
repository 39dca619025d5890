"""Built-in data-source plugins: tiingo, upload, synthetic."""
