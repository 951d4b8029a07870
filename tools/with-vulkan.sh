#!/usr/bin/env bash
# Run a command with a Vulkan device available. If no Vulkan driver is
# installed, install Mesa's software rasteriser (lavapipe) and the loader
# first (Debian/Ubuntu; needs root or sudo). A machine with a real GPU driver
# is left alone. Usage: bash tools/with-vulkan.sh cargo test
set -euo pipefail

# A loader and at least one ICD manifest in any of the loader's standard
# folders. (One `ls` over all three globs fails when any folder is absent,
# which sent machines with a driver into apt-get on every call.) Not
# `grep -q`: it exits at the first match, ldconfig can then die of SIGPIPE,
# and pipefail reads that as "no loader" (about 1 call in 10 here).
have_vulkan() {
    ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null || return 1
    local f
    for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json; do
        [ -e "$f" ] && return 0
    done
    return 1
}

if ! have_vulkan; then
    echo "with-vulkan: no Vulkan driver found; installing lavapipe (mesa-vulkan-drivers, libvulkan1)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
fi

# The Vulkan loader warns on every start when this is unset (headless machines).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
exec "$@"
