#!/usr/bin/env bash
# A real shell tool that asks for approval with `toolwarden ask`.
# Usage: ask_tool.sh SUMMARY KEY
# Prints "RESPONSE <stdout of ask>" and "EXIT <code>", then exits with ask's exit code.
set -u
response=$(toolwarden ask "$1" --key "$2")
code=$?
echo "RESPONSE ${response}"
echo "EXIT ${code}"
exit "${code}"
