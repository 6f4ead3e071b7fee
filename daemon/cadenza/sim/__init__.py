"""Simulation support for bench/swarm: a synthetic listening workload and a simulated network."""
