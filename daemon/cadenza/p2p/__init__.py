"""The peer overlay: neighbours, 2-hop search, serving and fetching between speakers."""
