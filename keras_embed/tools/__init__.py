"""The `keras-embed` command line, the demo and the benchmark harness."""
