"""The speaker's control plane: HTTP API, events, mDNS advertisement."""
