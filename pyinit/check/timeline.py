"""`pyinit-check --timeline FILE.svg`: every request of a run through its signal, drawn over time.

One bar per request, in the order they started, from its start to its end:
green when it was served (a 2xx or 3xx status and the whole body), red when
it failed; the slow requests (--in-flight) are outlined. The signal and the
command's exit are vertical lines. Each bar's tooltip (an SVG <title>) is
the request's line from the text report. The same records as the JSON's
"traffic", for a CI artifact: a glance shows where the failures lie.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import List, Optional

from pyinit.check.reports import _xml_safe
from pyinit.check.verdicts import Run

WIDTH, LEFT, RIGHT, TOP, BOTTOM = 960, 70, 30, 64, 50
SERVED, FAILED, SIGNAL, EXIT, INK = "#2e9e44", "#d62f2f", "#1f5fbf", "#222222", "#444444"
BARS_HEIGHT = 480  # pixels for all the bars; each gets 2 to 14 of them


def timeline(run: Run, command: str) -> bytes:
    """The SVG document (UTF-8, with its XML declaration) of `run`'s traffic."""
    traffic = run.traffic
    requests = [] if traffic is None else traffic.requests
    row = max(2.0, min(14.0, BARS_HEIGHT / max(1, len(requests))))
    height = TOP + row * max(1, len(requests)) + BOTTOM
    svg = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", width=str(WIDTH), height="%.0f" % height,
                     viewBox="0 0 %d %.0f" % (WIDTH, height), style="font-family: sans-serif; font-size: 12px")
    ET.SubElement(svg, "rect", width="100%", height="100%", fill="white")
    verdict = "PASS" if run.passed else "FAIL"
    _text(svg, LEFT, 20, "%s  %s" % (verdict, command), weight="bold")
    if traffic is None or not requests:
        _text(svg, LEFT, 42, "no request was made: the command never became ready")
        return _document(svg)
    _text(svg, LEFT, 42, "%s.  green: served, red: failed, outlined: in flight at the signal (--slow)"
          % traffic.summary())
    ends = [request.end or 0.0 for request in requests]
    moments = [moment for moment in (traffic.signal_at, run.exit_at) if moment is not None]
    span = max([1e-3, *ends, *moments]) * 1.04
    scale = (WIDTH - LEFT - RIGHT) / span
    bottom = TOP + row * len(requests)
    _axis(svg, span, scale, bottom)
    for index, request in enumerate(requests):
        start, end = request.start, request.end if request.end is not None else span
        bar = ET.SubElement(svg, "rect", x="%.2f" % (LEFT + start * scale), y="%.2f" % (TOP + index * row),
                            width="%.2f" % max(1.0, (end - start) * scale), height="%.2f" % max(1.0, row - 1),
                            fill=SERVED if request.served else FAILED)
        if request.slow:
            bar.set("stroke", INK)
        ET.SubElement(bar, "title").text = traffic.line(request)
    for moment, label, colour, anchor in ((traffic.signal_at, traffic.signal_name or "signal", SIGNAL, "end"),
                                          (run.exit_at, "exit", EXIT, "start")):
        if moment is not None:  # the signal's label left of its line, the exit's right of it: they never overlap
            x = "%.2f" % (LEFT + moment * scale)
            line = ET.SubElement(svg, "line", x1=x, x2=x, y1=str(TOP - 8), y2="%.2f" % bottom, stroke=colour)
            line.set("stroke-width", "2")
            if colour == SIGNAL:
                line.set("stroke-dasharray", "6 3")
            _text(svg, float(x) + (3 if anchor == "start" else -3), TOP - 10, label, fill=colour).set("text-anchor",
                                                                                                       anchor)
    return _document(svg)


def _axis(svg: ET.Element, span: float, scale: float, bottom: float) -> None:
    """The time axis under the bars: ticks at 1, 2 or 5 times a power of ten seconds, about ten of them."""
    step = _tick(span / 10)
    ET.SubElement(svg, "line", x1=str(LEFT), x2="%.2f" % (LEFT + span * scale), y1="%.2f" % bottom,
                  y2="%.2f" % bottom, stroke=INK)
    ticks: List[float] = [index * step for index in range(int(span / step) + 1)]
    for moment in ticks:
        x = LEFT + moment * scale
        ET.SubElement(svg, "line", x1="%.2f" % x, x2="%.2f" % x, y1="%.2f" % bottom, y2="%.2f" % (bottom + 5),
                      stroke=INK)
        _text(svg, x - 8, bottom + 18, ("%g" % round(moment, 6)))
    _text(svg, LEFT, bottom + 36, "seconds from the start of the traffic")


def _tick(rough: float) -> float:
    power = 10.0 ** math.floor(math.log10(rough))
    return next(factor * power for factor in (1, 2, 5, 10) if factor * power >= rough)


def _text(svg: ET.Element, x: float, y: float, text: str, fill: str = INK,
          weight: Optional[str] = None) -> ET.Element:
    element = ET.SubElement(svg, "text", x="%.2f" % x, y="%.2f" % y, fill=fill)
    if weight is not None:
        element.set("font-weight", weight)
    element.text = text
    return element


def _document(svg: ET.Element) -> bytes:
    for element in svg.iter():
        element.text = element.text and _xml_safe(element.text)
    return ET.tostring(svg, encoding="utf-8", xml_declaration=True)
