"""The swarm simulator's benchmark: ``cadenza bench swarm`` (see ``cadenza/sim/cli.py``).

    .venv/bin/python bench/swarm.py [--speakers 1000] [--hours 24] [--seed 1] [--out DIR]
    .venv/bin/python bench/swarm.py --scale 100,300,1000 --hours 24
    .venv/bin/python bench/swarm.py --lab --seed 1     # bench/p2p.py's scenario, simulated

Prints the paper's table beside the run with peers and the baseline without; writes
results.json (deterministic for a seed), perf.json, table.txt and swarm.png.
"""

from __future__ import annotations

import sys

from cadenza.sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
