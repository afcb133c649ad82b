#!/usr/bin/env bash
# A throwaway PKI for the DICOM TLS tests, made with openssl in DIR (RSA 2048, SHA-256):
#   ca.pem/ca.key              the test CA
#   node.pem/node.key          pacsnode's certificate (CN=pacsnode, SAN IP:127.0.0.1), serverAuth+clientAuth
#   modality.pem/modality.key  a modality's client certificate (CN=modality1,O=pacsnode tests)
#   expired.pem/expired.key    a client certificate of the test CA that expired in 2020
#   pacs.pem/pacs.key          the PACS's (Orthanc's) certificate (CN=pacs, SAN IP:127.0.0.1)
#   other-ca.pem, stranger.pem/stranger.key   another CA, and a client certificate it issued
# Usage: make_test_pki.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"

ca() {  # ca NAME SUBJECT
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj "$2" -keyout "$1.key" -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# leaf NAME SUBJECT CA [openssl ca dates...]: a key, a request, and a certificate the CA signs with `openssl ca`
# (which, unlike `x509 -req`, takes any validity period, also one in the past).
leaf() {
  local name=$1 subject=$2 issuer=$3
  shift 3
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "$subject" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  mkdir -p "db-$issuer"
  [ -f "db-$issuer/index.txt" ] || { : > "db-$issuer/index.txt"; echo 01 > "db-$issuer/serial"; }
  cat > "$name.cnf" <<EOF
[ca]
default_ca = test
[test]
database = db-$issuer/index.txt
serial = db-$issuer/serial
new_certs_dir = db-$issuer
certificate = $issuer.pem
private_key = $issuer.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
x509_extensions = leaf
[any]
commonName = supplied
organizationName = optional
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
EOF
  openssl ca -batch -notext -config "$name.cnf" -in "$name.csr" -out "$name.pem" "$@" 2>/dev/null
  rm -f "$name.csr" "$name.cnf"
}

ca ca "/CN=pacsnode test CA"
ca other-ca "/CN=another test CA"
leaf node "/CN=pacsnode" ca -days 30
leaf modality "/O=pacsnode tests/CN=modality1" ca -days 30
leaf pacs "/CN=pacs" ca -days 30
leaf expired "/O=pacsnode tests/CN=old modality" ca -startdate 20200101000000Z -enddate 20200201000000Z
leaf stranger "/O=elsewhere/CN=modality1" other-ca -days 30
chmod 600 ./*.key
