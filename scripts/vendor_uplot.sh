#!/usr/bin/env bash
# Re-fetch the vendored uPlot from the npm registry and check it against service/ui/vendor/uPlot.json.
#   scripts/vendor_uplot.sh            check: the registry's files equal the vendored ones and the recorded sha256
#   scripts/vendor_uplot.sh --update   copy the registry's files over the vendored ones and record their sha256
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=service/ui/vendor
version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$vendor/uPlot.json")
version=${UPLOT_VERSION:-$version}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$version" >/dev/null && tar xzf "uplot-$version.tgz")
files=(uPlot.iife.min.js uPlot.min.css)
if [[ "${1:-}" == "--update" ]]; then
    for name in "${files[@]}"; do cp "$work/package/dist/$name" "$vendor/$name"; done
    cp "$work/package/LICENSE" "$vendor/uPlot.LICENSE"
    python3 - "$vendor" "$version" <<'PY'
import hashlib, json, sys
from pathlib import Path
vendor, version = Path(sys.argv[1]), sys.argv[2]
files = {name: hashlib.sha256((vendor / name).read_bytes()).hexdigest() for name in ("uPlot.iife.min.js", "uPlot.min.css")}
record = {"package": "uplot", "version": version, "license": "MIT", "license_file": "uPlot.LICENSE",
          "source": f"npm pack uplot@{version} (package/dist)", "sha256": files}
(vendor / "uPlot.json").write_text(json.dumps(record, indent=2) + "\n")
PY
    echo "vendored uplot@$version"
    exit 0
fi
status=0
for name in "${files[@]}"; do
    recorded=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sha256"][sys.argv[2]])' "$vendor/uPlot.json" "$name")
    fetched=$(sha256sum "$work/package/dist/$name" | cut -d' ' -f1)
    vendored=$(sha256sum "$vendor/$name" | cut -d' ' -f1)
    if [[ "$recorded" == "$fetched" && "$recorded" == "$vendored" ]]; then
        echo "ok   $name $recorded"
    else
        echo "FAIL $name recorded=$recorded registry=$fetched vendored=$vendored" >&2
        status=1
    fi
done
exit $status
