"""toolwarden.tui: the operator terminal UI (`toolwarden tui`).

Import `make_app` from `toolwarden.tui.app`; this package stays import-light so `--help` is fast.
"""
