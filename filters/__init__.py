"""Filters: units that transform batches between the ingest buffer and the sinks."""
