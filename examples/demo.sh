#!/bin/sh
# make demo: sign examples/sample.pdf through a signserver (the running one on the embedded
# defaults, else a temporary one), write out/signed.pdf and a PNG of its stamped page.
set -eu
cd "$(dirname "$0")/.."
STATE_DIR=${STATE_DIR:-var}
SIGNSERVER=.venv/bin/signserver
export SIGNSERVER_STATE_DIR="$STATE_DIR"
mkdir -p out

started=""
if ! .venv/bin/python -c 'import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", 50051)))'; then
    echo "demo: no server on 127.0.0.1:50051; starting a temporary one"
    ./softhsm-setup/softhsm-setup "$STATE_DIR" >/dev/null
    "$SIGNSERVER" serve --demo > out/demo-server.log 2>&1 &
    started=$!
    trap 'kill $started 2>/dev/null; wait $started 2>/dev/null || true' EXIT
    for _ in $(seq 1 120); do
        grep -q "serving on" out/demo-server.log 2>/dev/null && break
        sleep 0.5
    done
fi
for _ in $(seq 1 60); do [ -f "$STATE_DIR/demo/credential" ] && break; sleep 0.5; done

SIGNSERVER_ACCOUNT_PASSWORD=$(cat "$STATE_DIR/demo/password") \
SIGNSERVER_ACCOUNT_OTP=$(.venv/bin/python -c 'import pyotp,sys; print(pyotp.TOTP(open(sys.argv[1]).read().strip()).now())' "$STATE_DIR/demo/otp-seed") \
"$SIGNSERVER" sign-pdf examples/sample.pdf out/signed.pdf \
    --ca "$STATE_DIR/demo/ca.pem" --cert "$STATE_DIR/demo/portal.pem" --key "$STATE_DIR/demo/portal-key.pem" \
    --account demo.holder --credential "$(cat "$STATE_DIR/demo/credential")" --caption "數碼簽署 Assinatura digital"

pdftoppm -png -r 100 -singlefile -f 2 -l 2 out/signed.pdf out/signed
pdfsig out/signed.pdf | grep -E "Signer Certificate Common Name|Signature Validation|Signature Type" || true
echo "demo: wrote out/signed.pdf and out/signed.png"
