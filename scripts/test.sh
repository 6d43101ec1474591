#!/usr/bin/env bash
# Builds everything and runs the test suite (XCTest; real processes, real files).
#   scripts/test.sh [extra swift test arguments, e.g. --filter MMLogTests]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
ensure_system_packages
require_swift
cd "$ROOT"
swift build --build-tests
swift test --skip-build --disable-swift-testing "$@"
