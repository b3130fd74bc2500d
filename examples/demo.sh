#!/bin/sh
# make demo: sign examples/sample.pdf through a signserver (the running one at the configured
# address, else a temporary one), write out/signed.pdf and a PNG of its stamped page.
#
# The address (server.listen) and the token (hsm.token_label, hsm.module) are the configured ones:
# signserver.toml or $SIGNSERVER_CONFIG, and the SIGNSERVER_ variables. A SoftHSM token is made by
# softhsm-setup when missing; any other token must have been initialised with `signserver hsm init`.
# OUT_DIR (default out) receives the results.
set -eu
cd "$(dirname "$0")/.."
STATE_DIR=${STATE_DIR:-${SIGNSERVER_STATE_DIR:-var}}
OUT=${OUT_DIR:-out}
SIGNSERVER=.venv/bin/signserver
export SIGNSERVER_STATE_DIR="$STATE_DIR"
mkdir -p "$OUT"

# The configured address to connect to (a wildcard listen address is reached on this machine),
# token label and module, as shell assignments.
settings=$(.venv/bin/python - <<'PY'
import shlex
from signserver.addresses import is_loopback
from signserver.config import load_config

config = load_config()
host, port = config.server.host, config.server.port
connect = "localhost" if host in ("", "0.0.0.0", "::") or is_loopback(host) else host
address = f"[{connect}]:{port}" if ":" in connect else f"{connect}:{port}"
softhsm = "yes" if config.hsm.module and "softhsm" in str(config.hsm.module).lower() else ""
for name, value in [("ADDRESS", address), ("CONNECT_HOST", connect), ("PORT", str(port)),
                    ("TOKEN_LABEL", config.hsm.token_label), ("SOFTHSM", softhsm)]:
    print(f"{name}={shlex.quote(value)}")
PY
)
eval "$settings"

started=""
if ! .venv/bin/python -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)' \
        "$CONNECT_HOST" "$PORT" 2>/dev/null; then
    echo "demo: no server on $ADDRESS; starting a temporary one on token '$TOKEN_LABEL'"
    if [ -n "$SOFTHSM" ]; then
        SIGNSERVER_HSM_TOKEN_LABEL="$TOKEN_LABEL" ./softhsm-setup/softhsm-setup "$STATE_DIR" >/dev/null
    fi
    "$SIGNSERVER" serve --demo > "$OUT/demo-server.log" 2>&1 &
    started=$!
    trap 'kill $started 2>/dev/null; wait $started 2>/dev/null || true' EXIT
    for _ in $(seq 1 120); do
        grep -q "serving on" "$OUT/demo-server.log" 2>/dev/null && break
        kill -0 "$started" 2>/dev/null || { cat "$OUT/demo-server.log" >&2; exit 1; }
        sleep 0.5
    done
fi
for _ in $(seq 1 60); do [ -f "$STATE_DIR/demo/credential" ] && break; sleep 0.5; done

SIGNSERVER_ACCOUNT_PASSWORD=$(cat "$STATE_DIR/demo/password") \
SIGNSERVER_ACCOUNT_OTP=$(.venv/bin/python -c 'import pyotp,sys; print(pyotp.TOTP(open(sys.argv[1]).read().strip()).now())' "$STATE_DIR/demo/otp-seed") \
"$SIGNSERVER" sign-pdf examples/sample.pdf "$OUT/signed.pdf" --address "$ADDRESS" \
    --ca "$STATE_DIR/demo/ca.pem" --cert "$STATE_DIR/demo/portal.pem" --key "$STATE_DIR/demo/portal-key.pem" \
    --account demo.holder --credential "$(cat "$STATE_DIR/demo/credential")" --caption "數碼簽署 Assinatura digital"

pdftoppm -png -r 100 -singlefile -f 2 -l 2 "$OUT/signed.pdf" "$OUT/signed"
pdfsig "$OUT/signed.pdf" | grep -E "Signer Certificate Common Name|Signature Validation|Signature Type" || true
echo "demo: wrote $OUT/signed.pdf and $OUT/signed.png"
