"""Built-in pipeline steps."""
