"""Built-in strategies, one small module each, registered through the plugin manager like any third party."""
