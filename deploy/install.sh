#!/bin/sh
# Installs smartacct as a systemd service (README.md, "Running in production"). Run as root from
# the checkout the service will run, after scripts/setup.sh made its .venv:
#   cd /opt/smartacct && sudo bash scripts/setup.sh && sudo sh deploy/install.sh
#
# Idempotent: run it again after every upgrade. It creates the system user smartacct,
#   /etc/smartacct                       root:smartacct 0750
#   /etc/smartacct/config.toml           root:smartacct 0640  deploy/config.production.toml
#   /etc/smartacct/secrets.env           root:smartacct 0640  comments only, for the passwords
#   /var/lib/smartacct                   smartacct      0700  database (and Maildirs, if any)
#   /var/log/smartacct                   smartacct      0750  the log file
#   /etc/systemd/system/smartacct.service, /etc/logrotate.d/smartacct,
#   /usr/local/sbin/smartacct            the command line as the service user
# config.toml and secrets.env are never overwritten, only given these owners and modes;
# the unit, the logrotate file and the command are replaced by this checkout's versions.
# Nothing is started: edit the config and the secrets, then `systemctl enable --now smartacct`.
#
# SMARTACCT=/path/to/smartacct names the executable the service runs (default: this
# checkout's .venv/bin/smartacct); the unit's ExecStart and the command point at it.
# DESTDIR=/some/root installs into the root file system there instead of / (an image being
# built; the tests): the user goes into DESTDIR/etc/passwd (useradd --prefix), owners are
# that file's numeric ids, and systemd is not told.
set -eu
umask 022

DESTDIR=${DESTDIR:-}
SERVICE_USER=smartacct
ETC_DIR=/etc/smartacct
STATE_DIR=/var/lib/smartacct
LOG_DIR=/var/log/smartacct
UNIT=/etc/systemd/system/smartacct.service
LOGROTATE=/etc/logrotate.d/smartacct
COMMAND=/usr/local/sbin/smartacct

APP_DIR=$(cd "$(dirname "$0")/.." && pwd -P)
DEPLOY=$APP_DIR/deploy
SMARTACCT=${SMARTACCT:-$APP_DIR/.venv/bin/smartacct}

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo sh deploy/install.sh)"
case $DESTDIR in
    ''|/*) ;;
    *) die "DESTDIR must be an absolute path, not $DESTDIR" ;;
esac
case $SMARTACCT in
    /*) ;;
    *) die "SMARTACCT must be an absolute path, not $SMARTACCT" ;;
esac
[ -x "$SMARTACCT" ] || die "$SMARTACCT is missing: run scripts/setup.sh first"
# The unit hides these from the service (ProtectHome=yes, PrivateTmp=yes). An image built
# with DESTDIR has its own layout, so only an install on this system is held to this.
if [ -z "$DESTDIR" ]; then
    case $SMARTACCT in
        /home/*|/root/*|/run/user/*|/tmp/*|/var/tmp/*)
            die "the service cannot see $SMARTACCT (ProtectHome=yes, PrivateTmp=yes): clone to /opt/smartacct" ;;
    esac
fi

# --- the service user ------------------------------------------------------------------------

if [ -n "$DESTDIR" ]; then
    for f in passwd group shadow gshadow; do
        [ -f "$DESTDIR/etc/$f" ] || die "DESTDIR is not a root file system: $DESTDIR/etc/$f is missing"
    done
    set -- --prefix "$DESTDIR"
else
    set --
fi

# name -> id, from DESTDIR's files or from the running system
lookup() {  # lookup passwd|group NAME FIELD
    if [ -n "$DESTDIR" ]; then
        awk -F: -v name="$2" -v field="$3" '$1 == name { print $field; exit }' "$DESTDIR/etc/$1"
    else
        getent "$1" "$2" | cut -d: -f"$3"
    fi
}

if [ -z "$(lookup group "$SERVICE_USER" 3)" ]; then
    groupadd --system "$@" "$SERVICE_USER"
    say "group $SERVICE_USER created"
fi
if [ -z "$(lookup passwd "$SERVICE_USER" 3)" ]; then
    useradd --system "$@" --gid "$SERVICE_USER" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "smartacct daemon" "$SERVICE_USER"
    say "user $SERVICE_USER created"
fi
uid=$(lookup passwd "$SERVICE_USER" 3)
gid=$(lookup group "$SERVICE_USER" 3)
[ -n "$uid" ] && [ -n "$gid" ] || die "user or group $SERVICE_USER not found after creating it"

# The service user must be able to run it: a Python under /root (pyenv) is out of its reach.
if ! setpriv --reuid="$uid" --regid="$gid" --clear-groups -- \
        sh -c 'cd / && exec "$0" --help' "$SMARTACCT" >/dev/null 2>&1; then
    python=$(sed -n '1s/^#! *//p' "$SMARTACCT")
    [ -z "$python" ] || python=" (its Python: $(readlink -f "${python%% *}"))"
    die "user $SERVICE_USER cannot run $SMARTACCT$python: every folder on the way must be open to" \
        "others; make the .venv with the system's Python: rm -rf .venv && PYTHON=/usr/bin/python3 bash scripts/setup.sh"
fi

# --- folders and files -----------------------------------------------------------------------

install -d -o 0 -g "$gid" -m 0750 "$DESTDIR$ETC_DIR"
install -d -o "$uid" -g "$gid" -m 0700 "$DESTDIR$STATE_DIR"
install -d -o "$uid" -g "$gid" -m 0750 "$DESTDIR$LOG_DIR"

# keep NAME SOURCE: install SOURCE as NAME unless NAME exists; either way root:smartacct 0640
keep() {
    if [ -e "$DESTDIR$1" ]; then
        say "$1 kept (owner and mode set to root:$SERVICE_USER 0640)"
    else
        install -o 0 -g "$gid" -m 0640 "$2" "$DESTDIR$1"
        say "$1 created: edit it"
    fi
    chown "0:$gid" "$DESTDIR$1"
    chmod 0640 "$DESTDIR$1"
}
keep "$ETC_DIR/config.toml" "$DEPLOY/config.production.toml"
keep "$ETC_DIR/secrets.env" "$DEPLOY/secrets.env"
# A relative path resolves beside config.toml, in /etc/smartacct: read-only for the service.
if grep -Eq '^[[:space:]]*((path|file)[[:space:]]*=[[:space:]]*"[^/"]|url[[:space:]]*=[[:space:]]*"sqlite:///[^/])' \
        "$DESTDIR$ETC_DIR/config.toml"; then
    say "WARNING: $ETC_DIR/config.toml has relative paths, which resolve in $ETC_DIR where the" \
        "service cannot write: make them absolute under $STATE_DIR (see deploy/config.production.toml)"
fi

# Ours: replaced on every run, pointing at $SMARTACCT (the unit as shipped names /opt/smartacct).
install -d "$DESTDIR$(dirname "$UNIT")" "$DESTDIR$(dirname "$LOGROTATE")" "$DESTDIR$(dirname "$COMMAND")"
sed -e "s#^ExecStart=/opt/smartacct/.venv/bin/smartacct #ExecStart=$SMARTACCT #" \
    -e "s#^Documentation=file:/opt/smartacct/#Documentation=file:$APP_DIR/#" \
    "$DEPLOY/smartacct.service" > "$DESTDIR$UNIT.tmp"
grep -q "^ExecStart=$SMARTACCT " "$DESTDIR$UNIT.tmp" || die "deploy/smartacct.service: no ExecStart to point at $SMARTACCT"
chmod 0644 "$DESTDIR$UNIT.tmp" && mv "$DESTDIR$UNIT.tmp" "$DESTDIR$UNIT"
install -m 0644 "$DEPLOY/logrotate.conf" "$DESTDIR$LOGROTATE"
sed -e "s#@SMARTACCT@#$SMARTACCT#" -e "s#@SERVICE_USER@#$SERVICE_USER#" -e "s#@ETC_DIR@#$ETC_DIR#" \
    "$DEPLOY/smartacct-command.sh" > "$DESTDIR$COMMAND.tmp"
chmod 0755 "$DESTDIR$COMMAND.tmp" && mv "$DESTDIR$COMMAND.tmp" "$DESTDIR$COMMAND"
say "$UNIT, $LOGROTATE and $COMMAND installed"

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
[ -n "$DESTDIR" ] || command -v logrotate >/dev/null 2>&1 || say "logrotate is not installed: apt-get install logrotate"
say "next: edit $ETC_DIR/config.toml and $ETC_DIR/secrets.env, then"
say "  sudo smartacct config check && sudo systemctl enable --now smartacct"
