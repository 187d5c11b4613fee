"""Generate the `serveConfigV2` of the KubeRay manifests from the Serve configs in configs/.

    python scripts/serve_config.py           # rewrite serveConfigV2 in deploy/kuberay/rayservice-*.yaml
    python scripts/serve_config.py --check   # exit 1 naming every manifest that drifted

Each RayService names its source in the annotation `learnx.ai/serve-config` (e.g. configs/api-only.yaml).
The source is validated as the app would validate it (deployments/config.py), with the API keys the
Secret provides at run time; only the YAML text is rewritten, the rest of the manifest is kept as is."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kuberay"
ANNOTATION = "learnx.ai/serve-config"
FIELD = re.compile(r"^(?P<indent> *)serveConfigV2: \|\n", re.MULTILINE)
# What the Secret supplies at run time, so that a profile needing API keys validates here.
RUNTIME_ENV = {"LEARNX_API_KEYS": "check:" + "0" * 64}


def rayservice(manifest: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    (service,) = [d for d in docs if d.get("kind") == "RayService"]
    return service


def source_of(manifest: Path) -> Path:
    return ROOT / rayservice(manifest)["metadata"]["annotations"][ANNOTATION]


def generate(config_path: Path) -> str:
    """The serveConfigV2 text for a Serve config file: its content, validated, without comments."""
    sys.path.insert(0, str(ROOT))
    from core.config import load_config

    config = yaml.safe_load(config_path.read_text())
    for app in config["applications"]:
        load_config(app.get("args"), environ=RUNTIME_ENV)  # raises naming any bad key
    header = (f"# Generated from {config_path.relative_to(ROOT)} by scripts/serve_config.py: "
              "edit that file, then run the script.\n")
    return header + yaml.safe_dump(config, sort_keys=False, width=100)


def rewrite(manifest: Path, text: str) -> str:
    """The manifest with its serveConfigV2 block replaced by `text`."""
    content = manifest.read_text()
    match = FIELD.search(content)
    if match is None:
        raise SystemExit(f"{manifest}: no `serveConfigV2: |` block")
    indent = match["indent"] + "  "
    end = match.end()
    rest = content[end:].splitlines(keepends=True)
    kept = 0
    while kept < len(rest) and (rest[kept].startswith(indent) or not rest[kept].strip()):
        kept += 1
    block = "".join(indent + line if line.strip() else "\n" for line in text.splitlines(keepends=True))
    return content[:end] + block + "".join(rest[kept:])


def drifted(manifest: Path) -> bool:
    return rayservice(manifest)["spec"]["serveConfigV2"] != generate(source_of(manifest))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report drift (exit 1)")
    args = parser.parse_args()
    manifests = sorted(MANIFESTS.glob("rayservice-*.yaml"))
    stale = [m for m in manifests if drifted(m)]
    if args.check:
        for manifest in stale:
            print(f"{manifest.relative_to(ROOT)} drifted from {source_of(manifest).relative_to(ROOT)}: "
                  "run python scripts/serve_config.py", file=sys.stderr)
        return 1 if stale else 0
    for manifest in stale:
        manifest.write_text(rewrite(manifest, generate(source_of(manifest))))
        print(f"updated {manifest.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
