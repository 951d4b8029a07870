#!/usr/bin/env bash
# Run a command with a Vulkan device available. If no Vulkan driver is
# installed, install Mesa's software rasteriser (lavapipe) and the loader
# first (Debian/Ubuntu; needs root or sudo). A machine with a real GPU driver
# is left alone. Usage: bash tools/with-vulkan.sh cargo test
set -euo pipefail

have_vulkan() {
    # Not `grep -q`: it exits at the first match, ldconfig may then die of
    # SIGPIPE, and pipefail turns that into "no driver". And not one `ls` of
    # the three ICD folders: it fails when any one of them is missing.
    ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null || return 1
    local icd
    for icd in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json; do
        [ -e "$icd" ] && return 0
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
