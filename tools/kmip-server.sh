#!/usr/bin/env bash
# A real KMIP server for the tests: PyKMIP 0.11.0 from PyPI on 127.0.0.1, with a fresh test CA, an
# ECDSA P-256 server certificate (IP SAN 127.0.0.1, DNS SAN localhost), an ECDSA and an RSA client
# certificate, and a second "rogue" CA + client certificate that the server must refuse.
#
#   tools/kmip-server.sh start DIR [PORT]   start (installing PyKMIP into DIR/venv the first time);
#                                           prints `KMIP_TEST_DIR=DIR` when the server answers
#   tools/kmip-server.sh stop DIR           stop it (the process group of the pid in DIR/server.pid: the server and its children)
#   tools/kmip-server.sh status DIR         exit 0 when it answers
#
# DIR then holds: venv/, certs/{ca,client,rsa-client,server,rogue-ca,rogue-client}.{crt,key}, server.conf,
# client.conf (for PyKMIP's own client, tools/kmip_admin.py), kmip.toml (our --kmip-config, group
# "test"), port, pykmip.db, server.log. tests/it/kmip.rs reads DIR from the KMIP_TEST_DIR variable.
#
# PyKMIP facts this relies on: it speaks TLS 1.2 only (auth_suite TLS1.2); objects belong to the
# client certificate's CN that created them, so every client certificate here has the same CN;
# Destroy deletes the object (a later Get answers ItemNotFound); Get still serves Deactivated and
# Compromised keys. `cryptography<51` because PyKMIP 0.11 uses APIs that later releases removed.
set -euo pipefail
cmd=${1:?usage: kmip-server.sh start|stop|status DIR [PORT]}
dir=${2:?usage: kmip-server.sh start|stop|status DIR [PORT]}
port=${3:-15696}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case $cmd in
stop)
  if [[ -f $dir/server.pid ]]; then
    pid=$(cat "$dir/server.pid")
    # `start` runs the server under setsid: its process group is its own (pgid = pid), and holds the
    # processes PyKMIP forks per connection too, which outlive the parent otherwise.
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/server.pid"
  fi
  exit 0 ;;
status)
  [[ -f $dir/port ]] && answers "$(cat "$dir/port")" ; exit $? ;;
start) ;;
*) echo "kmip-server.sh: unknown command $cmd (start|stop|status)" >&2; exit 2 ;;
esac

if ! "$dir/venv/bin/python" -c 'import kmip' 2>/dev/null; then
  echo "kmip-server.sh: installing PyKMIP 0.11.0 into $dir/venv" >&2
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q 'pykmip==0.11.0' 'cryptography<51' >"$dir/pip.log" 2>&1 ||
    { echo "kmip-server.sh: pip install failed, see $dir/pip.log" >&2; exit 1; }
fi

c=$dir/certs
mkdir -p "$c" "$dir/policies"
if [[ ! -f $c/rsa-client.crt ]]; then
  (
    cd "$c"
    ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1"; }
    ca() { # name CN
      ec "$1.key"
      openssl req -x509 -new -key "$1.key" -sha256 -days 3650 -subj "/CN=$2" -out "$1.crt"
    }
    leaf() { # name CN CA extfile-lines
      ec "$1.key"
      openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
      printf '%b' "$4" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 3650 \
        -sha256 -extfile "$1.ext" -out "$1.crt"
    }
    ca ca "sstable-rekey test KMIP CA"
    ca rogue-ca "sstable-rekey rogue CA"
    leaf server 127.0.0.1 ca \
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
    leaf client rekey_client ca \
      "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
    leaf rogue-client rekey_client rogue-ca \
      "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
    # Same CN as client (PyKMIP gives objects to the CN), RSA key in PKCS#8 PEM.
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa-client.key
    openssl req -new -key rsa-client.key -subj "/CN=rekey_client" -out rsa-client.csr
    printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n' >rsa-client.ext
    openssl x509 -req -in rsa-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -sha256 -extfile rsa-client.ext -out rsa-client.crt
    chmod 600 ./*.key
  ) >"$dir/certs.log" 2>&1 || { echo "kmip-server.sh: openssl failed, see $dir/certs.log" >&2; exit 1; }
fi

cat >"$dir/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$c/server.crt
key_path=$c/server.key
ca_path=$c/ca.crt
auth_suite=TLS1.2
policy_path=$dir/policies
enable_tls_client_auth=True
logging_level=INFO
database_path=$dir/pykmip.db
CONF
cat >"$dir/client.conf" <<CONF
[client]
host=127.0.0.1
port=$port
certfile=$c/client.crt
keyfile=$c/client.key
ca_certs=$c/ca.crt
cert_reqs=CERT_REQUIRED
ssl_version=PROTOCOL_TLSv1_2
do_handshake_on_connect=True
suppress_ragged_eofs=True
CONF
cat >"$dir/kmip.toml" <<CONF
[groups.test]
hosts = ["127.0.0.1:$port"]
ca = "$c/ca.crt"
cert = "$c/client.crt"
key = "$c/client.key"
timeout_ms = 5000
CONF
echo "$port" >"$dir/port"

if [[ -f $dir/server.pid ]] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
  "$0" stop "$dir"
fi
if answers "$port"; then
  echo "kmip-server.sh: something else already listens on 127.0.0.1:$port; choose another PORT" >&2
  exit 1
fi
setsid "$dir/venv/bin/pykmip-server" -f "$dir/server.conf" -l "$dir/server.log" \
  >"$dir/server.out" 2>&1 </dev/null &
echo $! >"$dir/server.pid"
for _ in $(seq 1 150); do
  if answers "$port"; then
    echo "KMIP_TEST_DIR=$dir"
    exit 0
  fi
  kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || break
  sleep 0.2
done
echo "kmip-server.sh: PyKMIP did not start; see $dir/server.log and $dir/server.out" >&2
"$0" stop "$dir"
exit 1
