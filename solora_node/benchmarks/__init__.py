"""Benchmarks behind `solora-node bench NAME`: each module has add_arguments(parser) and
run(args) -> dict, the one JSON object printed with --json. Timings are reported, never asserted."""
