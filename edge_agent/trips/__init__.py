"""Zones, the geofence/trip step engine, and manifests."""
