"""A minimal PEP 517 backend for the `topnsigma` package: it zips topnsigma/ (with the native
libraries staged in topnsigma/_lib by scripts/install-python) into a wheel. No compiler and no
PyPI download: the package has no compiled extension of its own, only ctypes over a prebuilt
shared library."""

import base64
import hashlib
import os
import sysconfig
import zipfile

NAME = "topnsigma"
VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tag():
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"py3-none-{platform}"


def _files():
    package = os.path.join(ROOT, NAME)
    for directory, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(directory, name)
            yield path, os.path.relpath(path, ROOT).replace(os.sep, "/")


def _metadata():
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {NAME}\n"
        f"Version: {VERSION}\n"
        "Summary: Top-nσ batched LLM sampling on the CPU (ctypes over the TopNSigma C ABI)\n"
        "Requires-Python: >=3.9\n"
        "Requires-Dist: numpy\n"
    )


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if not os.path.exists(os.path.join(ROOT, NAME, "_lib", "libTopNSigmaC.so")):
        raise RuntimeError("topnsigma/_lib/libTopNSigmaC.so is missing: install with scripts/install-python")
    tag = _tag()
    filename = f"{NAME}-{VERSION}-{tag}.whl"
    dist_info = f"{NAME}-{VERSION}.dist-info"
    records = []
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, arcname in _files():
            with open(path, "rb") as f:
                data = f.read()
            info = zipfile.ZipInfo(arcname)
            info.external_attr = (os.stat(path).st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
            records.append(_record_line(arcname, data))
        extra = {
            f"{dist_info}/METADATA": _metadata(),
            f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: topnsigma_build\nRoot-Is-Purelib: false\nTag: {tag}\n",
            f"{dist_info}/top_level.txt": f"{NAME}\n",
        }
        for arcname, text in extra.items():
            data = text.encode()
            wheel.writestr(arcname, data)
            records.append(_record_line(arcname, data))
        records.append(f"{dist_info}/RECORD,,")
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return filename


def build_sdist(sdist_directory, config_settings=None):
    raise RuntimeError("topnsigma ships no sdist: build the Swift library and install with scripts/install-python")
