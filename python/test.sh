#!/usr/bin/env bash
# The Python package's tests: builds the wheel (maturin, into the workspace's target dir),
# installs it into the current Python environment, and runs pytest against the release binary
# (EMOKNOW_BIN, default $CARGO_TARGET_DIR/release/emoknow, built by `cargo test --release`).
#
# Needs python/requirements-test.txt installed:  python3 -m pip install -r python/requirements-test.txt
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
missing=$("$py" - <<'PY'
import importlib.util
mods = {"maturin": "maturin", "pytest": "pytest", "numpy": "numpy", "pyarrow": "pyarrow", "pandas": "pandas", "ray": "ray[data]"}
print(" ".join(p for m, p in mods.items() if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
    echo "python/test.sh: missing Python packages: $missing" >&2
    echo "install them with: $py -m pip install -r python/requirements-test.txt (a venv is wise)" >&2
    exit 2
fi
target=${CARGO_TARGET_DIR:-target}
wheels="$target/wheels"
rm -rf "$wheels"
"$py" -m maturin build --release --locked -m python/Cargo.toml -o "$wheels"
"$py" -m pip install --quiet --force-reinstall --no-deps "$wheels"/emoknow-*.whl
export EMOKNOW_BIN="${EMOKNOW_BIN:-$(cd "$target" && pwd)/release/emoknow}"
[ -x "$EMOKNOW_BIN" ] || { echo "python/test.sh: no $EMOKNOW_BIN: run cargo test --release --locked (or build --release) first" >&2; exit 2; }
"$py" -m pytest python/tests -q
