#!/bin/sh
# /usr/local/sbin/smartacct (installed by deploy/install.sh): the smartacct command line as
# the daemon runs, with its user, its config and its secrets:
#   sudo smartacct requests list
# As root it first becomes the service user: a command run as root would leave root-owned
# files (the SQLite -wal and -shm files, the log) that the daemon then cannot open.
# SMARTACCT_CONFIG names another config file; secrets.env is read from the same folder.
set -eu

SMARTACCT=@SMARTACCT@
SERVICE_USER=@SERVICE_USER@
CONFIG=${SMARTACCT_CONFIG:-@ETC_DIR@/config.toml}
SECRETS=$(dirname -- "$CONFIG")/secrets.env

if [ "$(id -u)" -eq 0 ]; then
    exec setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups -- "$0" "$@"
fi

# NAME=value lines, as systemd's EnvironmentFile= reads the simple ones: blank lines and
# lines starting with # or ; are skipped, whitespace around the value and one pair of
# quotes around it are dropped, nothing is expanded.
trim() { printf '%s' "$1" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//'; }
if [ ! -r "$SECRETS" ] && { [ -e "$SECRETS" ] || [ ! -x "$(dirname -- "$CONFIG")" ]; }; then
    echo "smartacct: cannot read $SECRETS: run as root (sudo smartacct ...) or as $SERVICE_USER" >&2
    exit 1
fi
if [ -r "$SECRETS" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        line=$(trim "$line")
        case $line in ''|'#'*|';'*) continue ;; esac
        case $line in *=*) ;; *) continue ;; esac
        name=$(trim "${line%%=*}")
        value=$(trim "${line#*=}")
        case $value in \"*\"|\'*\') value=${value#?}; value=${value%?} ;; esac
        case $name in
            ''|[0-9]*|*[!A-Za-z0-9_]*) echo "smartacct: $SECRETS: ignoring a line without a NAME=" >&2; continue ;;
        esac
        export "$name=$value"
    done < "$SECRETS"
fi
exec "$SMARTACCT" -c "$CONFIG" "$@"
