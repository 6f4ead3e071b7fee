"""The streaming engine: sources (cache, peers, service), scheduling, prefetch."""
