#!/usr/bin/env bash
# Installs the real servers the tests and the demo use (Debian/Ubuntu).
# Installs only what is missing; never starts the system services.
#   install-system-deps.sh          everything the tests use
#   install-system-deps.sh --demo   nginx only
set -euo pipefail
if [ "${1:-}" = "--demo" ]; then
    wanted=(nginx-light)
else
    # chromium: the status page's HTML view is checked in a headless browser
    # libapache2-mod-fcgid, h2o: tests/integration/test_mod_fcgid.py, test_h2o.py;
    # systemd: systemd-socket-activate and systemd-analyze (test_systemd.py)
    wanted=(nginx-light lighttpd apache2 haproxy caddy libfcgi-bin spawn-fcgi chromium
            libapache2-mod-fcgid h2o systemd)
fi
missing=()
for pkg in "${wanted[@]}"; do
    if [ "$pkg" = nginx-light ] && [ -x /usr/sbin/nginx ]; then
        continue  # nginx-light, nginx or nginx-full: any nginx will do
    fi
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == *"install ok installed"* ]] || missing+=("$pkg")
done
[ "${#missing[@]}" = 0 ] && exit 0

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "installing: ${missing[*]}" >&2
# Keep the packages' scripts from starting system services on port 80.
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created=1
fi
cleanup() { if [ "$created" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
