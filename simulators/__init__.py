"""Simulators standing in for hardware and people in tests, benchmarks and the demo."""
