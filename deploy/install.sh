#!/usr/bin/env bash
# Install or upgrade WyEli as a systemd service on Debian/Ubuntu. Run as root from a checkout:
#   sudo deploy/install.sh             # install/upgrade, then (re)start the service
#   sudo deploy/install.sh --no-start  # install/upgrade only (edit /etc/wyeli/wyeli.env first)
# Idempotent: safe to run again after `git pull`. It never overwrites /etc/wyeli/wyeli.env and never
# touches /var/lib/wyeli (the database, spool and calibration live there).
#
# What it does: system user `wyeli`; code copied to /opt/wyeli (owned by root, read-only for the bot);
# venv /opt/wyeli/.venv from requirements.txt (re-installed only when requirements change);
# /etc/wyeli/wyeli.env from deploy/wyeli.env.example (mode 0600); the unit in /etc/systemd/system;
# daemon-reload; enable; start or restart.
set -euo pipefail

APP_USER=wyeli
APP_DIR=/opt/wyeli
ETC_DIR=/etc/wyeli
ENV_FILE="$ETC_DIR/wyeli.env"
UNIT_NAME=wyeli-bot.service
UNIT_PATH="/etc/systemd/system/$UNIT_NAME"
PYTHON=${PYTHON:-python3}
START=1

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
log() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --no-start) START=0 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $arg" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$SRC_DIR/requirements.txt" ] || [ ! -d "$SRC_DIR/src/bot" ]; then
  die "$SRC_DIR does not look like a WyEli checkout"
fi

# ---- Python 3.11+ with venv ------------------------------------------------------------------------
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  log "installing python3 and python3-venv"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$("$PYTHON" -V 2>&1) is too old: WyEli needs Python 3.11+ (set PYTHON=/path/to/python3.11)"
# The service must be able to execute the interpreter the venv points at: ProtectHome=true hides /home and
# /root, so a pyenv/conda python there cannot work (the venv's python is only a symlink to it).
PY_REAL=$(readlink -f "$(command -v "$PYTHON")")
case "$PY_REAL" in
  /home/*|/root/*|/run/user/*)
    die "$PY_REAL lives under /home or /root, which the service cannot see (ProtectHome=true); use a system python (apt-get install python3 python3-venv) or PYTHON=/usr/bin/python3.11" ;;
esac

# ---- system user -----------------------------------------------------------------------------------
if ! id -u "$APP_USER" >/dev/null 2>&1; then
  log "creating system user $APP_USER"
  useradd --system --user-group --home-dir /var/lib/wyeli --no-create-home --shell /usr/sbin/nologin "$APP_USER"
fi

# ---- code ------------------------------------------------------------------------------------------
log "copying code from $SRC_DIR to $APP_DIR"
install -d -m 0755 -o root -g root "$APP_DIR"
if [ "$SRC_DIR" != "$APP_DIR" ]; then
  # Replace the code but keep the venv and the compiled analysis core (checked against the new sources at
  # start); local data, secrets and caches are not deployed.
  find "$APP_DIR" -mindepth 1 -maxdepth 1 ! -name .venv ! -name .native -exec rm -rf {} +
  tar -C "$SRC_DIR" \
    --exclude=./.venv --exclude=./.native --exclude=./.git --exclude=./data --exclude=./.env \
    --exclude='__pycache__' --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude=./.pytest_cache \
    -cf - . | tar -C "$APP_DIR" --no-same-owner -xf -
fi
chown -R root:root "$APP_DIR"
chmod -R u=rwX,go=rX "$APP_DIR"

# ---- venv ------------------------------------------------------------------------------------------
if [ ! -x "$APP_DIR/.venv/bin/python" ]; then
  log "creating venv $APP_DIR/.venv"
  "$PYTHON" -m venv "$APP_DIR/.venv"
fi
if ! cmp -s "$APP_DIR/requirements.txt" "$APP_DIR/.venv/.wyeli-requirements"; then
  log "installing requirements (pinned) into the venv"
  "$APP_DIR/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$APP_DIR/requirements.txt"
  cp "$APP_DIR/requirements.txt" "$APP_DIR/.venv/.wyeli-requirements"
else
  log "requirements unchanged: venv kept"
fi
if ! (cd "$APP_DIR" && runuser -u "$APP_USER" -- "$APP_DIR/.venv/bin/python" -c 'import src.bot.main'); then
  die "the venv does not work for user $APP_USER (see above); remove $APP_DIR/.venv and run this script again"
fi
# The compiled analysis core (mypyc) when a C compiler is here; otherwise the same code runs as pure Python.
(cd "$APP_DIR" && "$APP_DIR/.venv/bin/python" -m src.native build --if-possible) || true
chmod -R u=rwX,go=rX "$APP_DIR/.native" 2>/dev/null || true
# Byte-compile now: the service cannot write __pycache__ (ProtectSystem=strict).
"$APP_DIR/.venv/bin/python" -m compileall -q "$APP_DIR/src" >/dev/null || true
if [ -d "$APP_DIR/backtest" ]; then
  "$APP_DIR/.venv/bin/python" -m compileall -q "$APP_DIR/backtest" >/dev/null || true
fi

# ---- configuration ---------------------------------------------------------------------------------
install -d -m 0700 -o root -g root "$ETC_DIR"
if [ ! -e "$ENV_FILE" ]; then
  log "creating $ENV_FILE (mode 0600) from the example: edit it, then systemctl restart wyeli-bot"
  install -m 0600 -o root -g root "$SRC_DIR/deploy/wyeli.env.example" "$ENV_FILE"
else
  log "$ENV_FILE exists: left unchanged"
  chmod 0600 "$ENV_FILE"
fi
if ! (cd "$APP_DIR" && "$APP_DIR/.venv/bin/python" -m src.bot.config --check --env-file "$ENV_FILE" >/dev/null); then
  die "configuration problems above: fix $ENV_FILE and run this script again"
fi

# ---- systemd ---------------------------------------------------------------------------------------
install -m 0644 -o root -g root "$SRC_DIR/deploy/wyeli-bot.service" "$UNIT_PATH"
if [ ! -d /run/systemd/system ]; then
  log "systemd is not running here: unit installed to $UNIT_PATH, not started"
  exit 0
fi
systemctl daemon-reload
systemctl enable "$UNIT_NAME" >/dev/null
if [ "$START" -eq 1 ]; then
  if systemctl is-active --quiet "$UNIT_NAME"; then
    log "restarting $UNIT_NAME"
    systemctl restart "$UNIT_NAME"
  else
    log "starting $UNIT_NAME (waits for READY=1 after warm-up)"
    systemctl reset-failed "$UNIT_NAME" >/dev/null 2>&1 || true
    systemctl start "$UNIT_NAME"
  fi
  systemctl --no-pager --lines=5 status "$UNIT_NAME" || true
else
  log "installed and enabled; start with: systemctl start $UNIT_NAME"
fi
log "done. Logs: journalctl -u $UNIT_NAME -f ; health: curl -s http://127.0.0.1:8080/readyz"
