"""topnsigma.filter against a NumPy float64 oracle of the Top-nσ rule."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import topnsigma


@pytest.mark.parametrize("n", [0.0, 0.5, 1.0, 3.0])
def test_filter_matches_numpy_oracle(fixture_rows, n):
    for row in fixture_rows:
        x = row.astype(np.float64)
        std = x.std(ddof=1)
        threshold = x.max() - n * std
        f = topnsigma.filter(row, n_sigma=n)
        assert f["max"] == x.max()
        assert f["finite"] == row.size
        assert f["mean"] == pytest.approx(x.mean(), abs=1e-6 * std)
        assert f["std"] == pytest.approx(std, rel=1e-6)
        assert f["threshold"] == pytest.approx(threshold, abs=1e-6 * (1 + n) * std)
        assert f["kept"].dtype == np.int64
        assert f["kept"].tolist() == np.nonzero(x >= f["threshold"])[0].tolist()
        # And against the oracle's own threshold, except for logits within rounding of it.
        oracle = set(np.nonzero(x >= threshold)[0].tolist())
        borderline = set(np.nonzero(np.abs(x - threshold) <= 1e-5 * std)[0].tolist())
        assert set(f["kept"].tolist()) ^ oracle <= borderline


def test_filter_masked_and_off():
    row = np.array([-np.inf, 1.0, 2.0, -np.inf, 3.0, 0.0], dtype=np.float32)
    finite = np.array([1.0, 2.0, 3.0, 0.0])
    f = topnsigma.filter(row, n_sigma=1.0)
    assert f["finite"] == 4
    assert f["std"] == pytest.approx(finite.std(ddof=1))
    assert f["kept"].tolist() == [i for i in range(6) if row[i] >= 3.0 - finite.std(ddof=1)]
    off = topnsigma.filter(row, n_sigma=None)
    assert off["kept"].tolist() == [1, 2, 4, 5] and off["threshold"] == -np.inf



def test_filter_zero_std_keeps_the_maximum_for_every_n():
    # std 0 (every finite logit equal): the threshold is the maximum, never inf * 0 = NaN.
    row = np.array([2.5, -np.inf, 2.5], dtype=np.float32)
    for n in (0.0, 1.0, 1e30, float("inf")):
        f = topnsigma.filter(row, n_sigma=n)
        assert f["std"] == 0 and f["threshold"] == 2.5 and f["kept"].tolist() == [0, 2]

def test_filter_truncation(fixture_rows):
    row = fixture_rows[2]
    order = np.argsort(-row.astype(np.float64), kind="stable")
    assert topnsigma.filter(row, n_sigma=None, top_k=5)["kept"].tolist() == sorted(order[:5].tolist())
    # min-p at T = 1: logits >= max + ln(min_p).
    m = 0.05
    kept = topnsigma.filter(row, n_sigma=None, min_p=m)["kept"]
    assert kept.tolist() == np.nonzero(row.astype(np.float64) >= row.max() + np.log(m))[0].tolist()
    # top-p: the smallest most-probable prefix with mass >= p.
    p = 0.8
    probs = np.exp(row.astype(np.float64) - row.max())
    probs /= probs.sum()
    cumulative = np.cumsum(probs[order])
    size = int(np.searchsorted(cumulative, p) + 1)
    assert topnsigma.filter(row, n_sigma=None, top_p=p)["kept"].tolist() == sorted(order[:size].tolist())


def test_filter_errors():
    with pytest.raises(ValueError, match="index 2 is NaN"):
        topnsigma.filter(np.array([1, 2, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="no finite logit"):
        topnsigma.filter(np.full(4, -np.inf, dtype=np.float32))
    with pytest.raises(ValueError, match="n is invalid"):
        topnsigma.filter(np.ones(4, dtype=np.float32), n_sigma=-1)
    with pytest.raises(ValueError):
        topnsigma.filter(np.ones(4, dtype=np.float64))
    with pytest.raises(ValueError):
        topnsigma.filter(np.ones((2, 2), dtype=np.float32))


def test_filter_memory_error_when_scratch_cannot_be_had():
    """A row whose temporary scratch (about 64 bytes per logit: 17 GB at 2^28 logits) cannot be
    allocated raises MemoryError (the C call returns TNS_ERR_OUT_OF_MEMORY; it used to abort the
    process). Run in a child whose address space may grow by only 4 GiB: the 1 GiB row and the
    3 GiB of output buffers are never touched, the scratch allocation fails."""
    script = textwrap.dedent(
        """
        import resource, numpy as np, topnsigma
        row = np.zeros(1 << 28, dtype=np.float32)
        pages = int(open("/proc/self/statm").read().split()[0])
        limit = pages * resource.getpagesize() + (4 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            topnsigma.filter(row)
        except MemoryError as error:
            print("MemoryError:", error)
        else:
            print("no error")
        """
    )
    # The child imports the package this process imported.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(topnsigma.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                         cwd=package_parent)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.startswith("MemoryError: out of memory"), out.stdout
