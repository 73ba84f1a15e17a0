"""The collector in the platform's short-lived processes (orchestration/lifetime.py)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a process of its own: freezing the test session's objects would keep them forever.
PROCESS = """
import atexit, gc, json, weakref

class Node:
    pass

def at_exit():  # registered before short_lived's own handler, so it runs after it
    print(json.dumps({"late_walked_at_exit": any(o is late for o in gc.get_objects())}))

atexit.register(at_exit)
early = [Node() for _ in range(1000)]

from orchestration.lifetime import short_lived

short_lived()
walked = {id(o) for o in gc.get_objects()}
cycle = Node()
cycle.me = cycle
gone = weakref.ref(cycle)
del cycle
gc.collect()
late = Node()
late.me = late
print(json.dumps({
    "early_walked": any(id(node) in walked for node in early),
    "cycle_made_after_collected": gone() is None,
}))
"""


def test_a_short_lived_process_stops_walking_what_lives_to_its_end_and_still_collects():
    done = subprocess.run(
        [sys.executable, "-c", PROCESS], cwd=ROOT, capture_output=True, text=True, check=True
    )
    during, at_exit = (json.loads(line) for line in done.stdout.splitlines())
    assert during == {"early_walked": False, "cycle_made_after_collected": True}
    assert at_exit == {"late_walked_at_exit": False}
