"""The GNSS path of the van gateway: NMEA parsing, fix assembly, filters and sources.

Pure code (no I/O):

- ``nmea``: the sans-IO stream parser (bytes in, checked sentences out);
- ``sentences``: field layouts of the sentences fix assembly reads, as data;
- ``assembler``: the sentences of one epoch into one ``Fix``, as gpsd would report it;
- ``filters``: which fixes to trust (``FixFilter``) and which to report (``AdaptiveReporter``);
- ``gpsd_json``, ``baud``, ``source_url``, ``geo``: gpsd reports, baud detection, source URLs,
  distances.

Drivers and wiring: ``sources`` (serial, TCP, file), ``service`` (``GnssService``, what the
runtime starts) and ``replay`` (``edge-agent gnss replay`` and the replay iterators).
"""
