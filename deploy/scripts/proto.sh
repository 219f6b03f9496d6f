#!/usr/bin/env bash
# Generates Python code (messages, gRPC stubs, type stubs) from proto/ into gen/ (not committed).
# The generated modules import each other as callcenter.<context>.v1..., so gen/ goes on sys.path
# (make setup writes a .pth file for the venv; pytest adds it itself).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"

rm -rf gen
mkdir -p gen
mapfile -t protos < <(find proto -name '*.proto' | sort)
"$PYTHON" -m grpc_tools.protoc -Iproto \
  --python_out=gen --pyi_out=gen --grpc_python_out=gen \
  "${protos[@]}"
echo "generated ${#protos[@]} proto files into gen/"
