"""The GNSS path of the van gateway: NMEA parsing, fix assembly, filters and sources."""
