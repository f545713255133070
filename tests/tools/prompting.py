"""Asks each question in argv with input() on its terminal, printing what it was answered."""

import os
import sys

print(f"TTY {os.isatty(0)} {os.isatty(1)} {os.isatty(2)}", flush=True)
for number, question in enumerate(sys.argv[1:], start=1):
    answer = input(f"{question} [y/N] ")
    print(f"ANSWER {number} {answer!r}", flush=True)
