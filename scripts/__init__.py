"""Developer scripts: code generation and benchmarks (run them as files)."""
