"""The GNSS path of the van gateway: NMEA parsing, fix assembly, filters and sources.

Pure code (no I/O):

- ``nmea``: the sans-IO stream parser (bytes in, checked sentences out);
- ``sentences``: field layouts of the sentences fix assembly reads, as data;
- ``assembler``: the sentences of one epoch into one ``Fix``, as gpsd would report it;
- ``filters``: which fixes to trust (``FixFilter``) and which to report (``AdaptiveReporter``);
- ``pipeline``: the four above in one ``GnssPipeline``, the same for the agent and the replays;
- ``gpsd_json``, ``baud``, ``geo``: gpsd reports, what the serial driver needs to know of NMEA
  receivers (baud probe, epochs, init sentences), distances.

Wiring: ``service`` (``GnssService``, what the runtime starts: devices through
``edge_agent.drivers``, named by the URLs of ``config``) and ``replay`` (``edge-agent gnss
replay`` and the replay iterators).
"""
