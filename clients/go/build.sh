#!/usr/bin/env bash
# Builds the Go client offline, in GOPATH mode, from protos/ and Debian's Go packages (no module proxy):
#   protoc-gen-go       from google.golang.org/protobuf (golang-google-protobuf-dev)
#   protoc-gen-go-grpc  from google.golang.org/grpc     (golang-google-grpc-dev)
# The generated code goes under the build directory (default .cache/clients/go), never into the checkout;
# the tensor helper's tests run, and the example lands in $BUILD/bin/inferd-example.
#
#   clients/go/build.sh [BUILD_DIR]        (make clients-go runs it from the repository root)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(mkdir -p "${1:-$ROOT/.cache/clients/go}" && cd "${1:-$ROOT/.cache/clients/go}" && pwd)
SYSTEM_GOPATH=${INFERD_SYSTEM_GOPATH:-/usr/share/gocode}
IMPORT=github.com/inferd/inferd/clients/go

for tool in go protoc; do
  command -v "$tool" >/dev/null || { echo "clients-go: '$tool' is not installed (Debian: golang-go, protobuf-compiler)" >&2; exit 1; }
done
for package in google.golang.org/protobuf google.golang.org/grpc; do
  [ -d "$SYSTEM_GOPATH/src/$package" ] || {
    echo "clients-go: $SYSTEM_GOPATH/src/$package is missing (Debian: golang-google-protobuf-dev, golang-google-grpc-dev)" >&2
    exit 1
  }
done

export GO111MODULE=off GOPATH="$BUILD/gopath:$SYSTEM_GOPATH" GOCACHE="$BUILD/gocache" GOFLAGS= GOPROXY=off CGO_ENABLED=0

# 1. the protoc plugins, from the Debian sources
go build -o "$BUILD/bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$BUILD/bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc

# 2. a fresh source tree: the generated stubs (paths from each file's go_package) and a copy of clients/go
SRC="$BUILD/gopath/src"
rm -rf "$SRC" && mkdir -p "$SRC/$IMPORT"
PROTOS=("$ROOT"/protos/inferd/v1/*.proto)
# The health stubs: protos/grpc/health/v1/health.proto has grpc-go's own go_package,
# google.golang.org/grpc/health/grpc_health_v1. GOPATH mode takes a package from the first root holding
# its folder, so the build's root gets a copy of Debian's grpc (4 MB) whose grpc_health_v1 is replaced by
# the stubs generated here: the example then calls health through code generated from protos/.
HEALTH=grpc/health/v1/health.proto
if [ -f "$ROOT/protos/$HEALTH" ]; then
  mkdir -p "$SRC/google.golang.org"
  cp -R "$SYSTEM_GOPATH/src/google.golang.org/grpc" "$SRC/google.golang.org/grpc"
  rm -rf "$SRC/google.golang.org/grpc/health/grpc_health_v1"
  PROTOS+=("$ROOT/protos/$HEALTH")
fi
protoc -I "$ROOT/protos" \
  --plugin=protoc-gen-go="$BUILD/bin/protoc-gen-go" --go_out="$SRC" \
  --plugin=protoc-gen-go-grpc="$BUILD/bin/protoc-gen-go-grpc" --go-grpc_out="$SRC" \
  "${PROTOS[@]}"
cp -R "$ROOT/clients/go/inferd" "$ROOT/clients/go/cmd" "$SRC/$IMPORT/"

# 3. gofmt and vet, the tensor helper's tests, then the example
unformatted=$(gofmt -l "$ROOT/clients/go")
[ -z "$unformatted" ] || { echo "clients-go: not gofmt-formatted (run gofmt -w): $unformatted" >&2; exit 1; }
go vet "$IMPORT/inferd" "$IMPORT/cmd/example"
go test -count=1 "$IMPORT/inferd"
go build -o "$BUILD/bin/inferd-example" "$IMPORT/cmd/example"
echo "built $BUILD/bin/inferd-example (run: $BUILD/bin/inferd-example 127.0.0.1:8001)"
