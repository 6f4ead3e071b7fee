"""Cadenza's wire protocol, sans-IO.

Nothing in this package performs I/O or imports trio: bytes go in through
``receive_data``, events come out of ``next_event``, and bytes to put on the
wire come out of ``data_to_send``. The trio layer lives in :mod:`cadenza.net`.
"""
