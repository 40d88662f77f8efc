"""The Spark Structured Streaming job: validate each micro-batch, store it, publish it exactly once."""
