#!/usr/bin/env bash
# The official OpenAI SDKs as real clients of a running chat API's /v1:
#
#   scripts/openai-sdk.sh python   # the Python SDK (PyPI `openai`, pinned in tests/openai-sdk/requirements.txt)
#   scripts/openai-sdk.sh node     # the TypeScript SDK (npm `openai`, pinned in tests/openai-sdk/package-lock.json)
#   scripts/openai-sdk.sh setup    # only install both (cached in $COLLOQUY_CACHE_DIR)
#
# The chat-api integration test `openai_sdk` starts the server with a fake
# upstream and runs this with COLLOQUY_BASE_URL, COLLOQUY_API_KEY,
# COLLOQUY_USER, COLLOQUY_OTHER_USER, COLLOQUY_JWT and COLLOQUY_MODEL set.
# The SDKs are installed outside the clone, keyed by their pins, so a warm
# run installs nothing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
dir="$REPO_ROOT/tests/openai-sdk"

case "${1:-}" in
  python)
    venv=$(need_py_venv openai-sdk "$dir/requirements.txt")
    exec "$venv/bin/python" "$dir/sdk_test.py"
    ;;
  node)
    modules=$(need_npm_dir openai-sdk "$dir")
    NODE_PATH="$modules/node_modules" exec node "$dir/sdk_test.cjs"
    ;;
  setup)
    need_py_venv openai-sdk "$dir/requirements.txt" >/dev/null
    need_npm_dir openai-sdk "$dir" >/dev/null
    ;;
  *) die "usage: $0 python|node|setup" ;;
esac
