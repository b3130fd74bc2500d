#!/bin/sh
# Installs the Debian packages signserver needs, only those missing.
# Used by `make`; safe to run again (it does nothing when all are present).
set -eu

PACKAGES="softhsm2 opensc openssl fonts-noto-cjk poppler-utils opencryptoki libnss3-tools postgresql nginx chromium chromium-driver g++ pkg-config libgrpc++-dev"

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    SUDO="unavailable"
fi

if [ "$SUDO" = "unavailable" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "signserver needs these system packages:$missing" >&2
    echo "Install them with your package manager (Debian: apt-get install$missing) and run make again." >&2
    exit 1
fi

echo "Installing system packages:$missing"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends $missing; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends $missing || {
        echo "Could not install:$missing. Install them by hand and run make again." >&2
        exit 1
    }
fi
