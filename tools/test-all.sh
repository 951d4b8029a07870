#!/usr/bin/env bash
# Every test: the Rust suite (cargo test), then the Python package built
# into a virtual environment and its pytest suite (python/tests). Usage:
#   bash tools/with-vulkan.sh bash tools/test-all.sh
# The venv (target/py-venv, or $HOPFIELD_VENV) gets python/requirements-test.txt
# from PyPI. The extension is built in the dev profile, whose dependencies
# (opt-level 2, Cargo.toml) are the same artifacts cargo test uses in target/.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked

venv="${HOPFIELD_VENV:-target/py-venv}"
if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian's python3 ships venv's pip bootstrap separately.
        echo "test-all: installing python3-venv" >&2
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null ||
            { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-test.txt
VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" maturin develop --locked --profile dev

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
set +e
"$venv/bin/python" -m pytest python/tests
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "test-all: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
