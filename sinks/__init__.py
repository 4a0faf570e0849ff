"""Sinks: units that deliver batches to a destination, each on its own task."""
