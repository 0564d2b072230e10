#!/bin/sh
# Installs the servers the integration tests start themselves (issue 5): Dovecot
# (IMAP + LMTP), PostgreSQL and openssl; and what tests/test_deploy.py runs
# deploy/install.sh with: systemd-analyze (Debian's systemd package, to verify
# the unit; nothing is started), useradd and setpriv (essential packages, but
# checked). Idempotent: apt-get runs only when something is missing. The
# packages' own system-wide services are stopped and kept from starting, since
# the tests run private instances on free ports.
set -eu

export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
else
    SUDO="sudo"
fi

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=""
for pkg in dovecot-imapd dovecot-lmtpd postgresql openssl; do
    installed "$pkg" || missing="$missing $pkg"
done
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v useradd >/dev/null 2>&1 || missing="$missing passwd"
command -v setpriv >/dev/null 2>&1 || missing="$missing util-linux"

if [ -n "$missing" ]; then
    # Keep package scripts from starting services while installing (exit 101 = "denied").
    policy=/usr/sbin/policy-rc.d
    created_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        created_policy=yes
    fi
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing
    if [ -n "$created_policy" ]; then
        $SUDO rm -f "$policy"
    fi
fi

for cmd in dovecot openssl systemd-analyze useradd setpriv; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "install-system-deps: $cmd still missing" >&2; exit 1; }
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "install-system-deps: initdb missing" >&2; exit 1; }

# No system-wide instance: stop any that runs and keep it from starting at boot.
stop_service() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now "$1" >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        $SUDO service "$1" stop >/dev/null 2>&1 || true
    fi
}
stop_service dovecot
stop_service postgresql
if [ -f /run/dovecot/master.pid ] && $SUDO kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
    $SUDO doveadm stop >/dev/null 2>&1 || $SUDO kill "$(cat /run/dovecot/master.pid)" || true
fi
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r version cluster _port status _rest; do
        case "$status" in
            online*) $SUDO pg_ctlcluster "$version" "$cluster" stop || true ;;
        esac
    done
fi
exit 0
