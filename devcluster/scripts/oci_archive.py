"""Pack root filesystem folders into an OCI image archive that `ctr images import` reads.

The real node has no registry to pull from and this machine has no Docker, so its images are
assembled here: one uncompressed layer per folder, lowest first (each folder as a tar with
numeric owners; an upper folder holds only what it adds), an image config with the entrypoint,
environment, user and working directory, a manifest and an index naming the image. Standard
library only; run with any Python 3.

    python3 oci_archive.py NAME OUT.tar LAYER_DIR... [--entrypoint JSON] [--cmd JSON]
        [--env K=V ...] [--user UID] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def _blob(blobs: Path, data: bytes | None = None, path: Path | None = None) -> tuple[str, int]:
    """Store data (or move the file at path) under its sha256 and return (digest, size)."""
    digest = hashlib.sha256()
    if path is None:
        assert data is not None
        digest.update(data)
        size = len(data)
    else:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        size = path.stat().st_size
    hexdigest = digest.hexdigest()
    target = blobs / hexdigest
    if path is None:
        target.write_bytes(data)
    else:
        shutil.move(path, target)
    return f"sha256:{hexdigest}", size


def build(layer_dirs: list[Path], name: str, out: Path, config: dict) -> str:
    """Write the archive of these layers as image `name` to out; return the manifest digest."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        layout = Path(tmp)
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layers = []
        for layer_dir in layer_dirs:
            layer_tar = layout / "layer.tar"
            # GNU tar keeps hard links, device nodes and numeric ownership, as a container
            # runtime expects of a layer; Python's tarfile would be slower on a venv.
            tar = ["tar", "--numeric-owner", "--sort=name", "-C", str(layer_dir)]
            subprocess.run([*tar, "-cf", str(layer_tar), "."], check=True)
            layers.append(_blob(blobs, path=layer_tar))
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [digest for digest, _ in layers]},
        }
        config_digest, config_size = _blob(blobs, json.dumps(image_config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
            "layers": [
                {"mediaType": LAYER, "digest": digest, "size": size} for digest, size in layers
            ],
        }
        manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                {
                    "mediaType": MANIFEST,
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                    },
                }
            ],
        }
        (layout / "index.json").write_text(json.dumps(index))
        (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w") as archive:
            for entry in ("oci-layout", "index.json"):
                archive.add(layout / entry, arcname=entry)
            for blob in sorted(blobs.iterdir()):
                archive.add(blob, arcname=f"blobs/sha256/{blob.name}")
        os.replace(partial, out)
    return manifest_digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="full image reference, e.g. hub-on-demand.local/pause:1")
    parser.add_argument("out", type=Path)
    parser.add_argument("layers", type=Path, nargs="+", help="layer folders, lowest first")
    parser.add_argument("--entrypoint", type=json.loads, default=None)
    parser.add_argument("--cmd", type=json.loads, default=None)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--user", default="")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    for layer in args.layers:
        if not layer.is_dir():
            parser.error(f"{layer} is not a folder")
    if ":" not in args.name.rpartition("/")[2]:
        parser.error(f"{args.name!r} has no tag")
    config: dict = {"Env": args.env or ["PATH=/usr/local/bin:/usr/bin:/bin"]}
    for key, value in (
        ("Entrypoint", args.entrypoint),
        ("Cmd", args.cmd),
        ("User", args.user),
        ("WorkingDir", args.workdir),
    ):
        if value:
            config[key] = value
    digest = build(args.layers, args.name, args.out, config)
    print(f"{args.name} {digest} -> {args.out}")


if __name__ == "__main__":
    main()
