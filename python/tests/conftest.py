import json
import os
import subprocess

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(REPO, "Tests", "TopNSigmaTests", "Fixtures", "smollm2-135m-8rows.npy")


@pytest.fixture(scope="session")
def fixture_rows():
    """8 real rows of SmolLM2-135M-Instruct logits, float32 [8, 49152]."""
    return np.load(FIXTURE)


@pytest.fixture(scope="session")
def nsigma():
    """Runs the Swift CLI `nsigma` (NSIGMA, or the repo's release build) and parses its JSON lines."""
    path = os.environ.get("NSIGMA") or os.path.join(REPO, ".build", "release", "nsigma")
    if not os.path.exists(path):
        pytest.fail(f"{path} not found: build it with `swift build -c release` (scripts/test does) or set NSIGMA")

    def run(*arguments):
        out = subprocess.run([path, *map(str, arguments)], check=False, capture_output=True, text=True)
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        return out.returncode, lines

    return run
