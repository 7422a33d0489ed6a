"""Carriers without edge devices: their events posted to the hub API (``intake``), and adapters
that turn a carrier's own status feed into envelopes (``adapter``, ``generic``, ``client``)."""
