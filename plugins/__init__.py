"""Plugins: the hook specifications, the plugin manager, built-in strategies and data sources."""
