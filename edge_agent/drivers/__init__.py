"""One driver layer for every domain: devices named by URL, read as bytes, reports or events.

Every domain (GNSS, text scanners, the station's dock sensors and signal) names its devices with
the same URLs (``url``: DESIGN §4 and §7) and reads them through the same drivers:

- ``serialport``: a serial port (pyserial, non-blocking on the event loop) with baud rate
  autodetection, the verdict on a rate given by the domain's own sans-IO probe;
- ``tcp``: raw bytes over TCP (``socket://``: simulators, ser2net, receivers with Wi-Fi);
- ``filereplay``: a recorded log, paced by an epoch rule the domain supplies;
- ``gpsd``: gpsd's JSON reports, one decoded object per report;
- ``keyboard``: a keyboard wedge through evdev, grabbed exclusively (key events out);
- ``gpio``: input lines with edge events stamped by the kernel and output lines (libgpiod v2);
- ``sources``: the byte source for a parsed URL; ``supervise``: the reopen loop with backoff and
  health states logged once per transition.

The drivers move bytes, lines, reports and events; what they mean (NMEA, scanner framing, key
maps) stays in the domains. This package imports only ``edge_agent.platform`` and
``edge_agent.wire``, and nothing here imports an optional device library (pyserial excepted)
before a URL needs it.
"""
