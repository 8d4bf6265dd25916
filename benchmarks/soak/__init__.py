"""`make soak`: honest drawings beside issue 18's and 34's hostile requests against the page.

A fixed number of requests (default 20,000; minutes, not hours) against the page launched on
loopback with 127.0.0.1 as its trusted proxy, so every simulated client has its own address
(X-Forwarded-For). First the server's bounded stores are filled to their bounds (fill.py; --no-fill
skips it), so that RSS growth afterwards is not a store filling up; then an honest-only phase (the
latency baseline), then honest clients beside hostile ones. Samples the server's RSS, open file
descriptors, temp-dir bytes and files, log bytes and (server.py's probe) its stores' sizes, what
malloc holds and Python's allocated blocks every second; after the last sample, malloc_trim(0) in
the server with VmRSS before and after. Writes a JSON summary and a plot.

    python -m benchmarks.soak --models models --requests 20000 --out benchmarks/soak.json
    python -m benchmarks.soak --models models --requests 6000 --trace 1 --trace-every 2000 ...
    python -m benchmarks.soak --rows 34 --models models [--before DIR] --out rows.json

Checks: the stores full before the measured window; the RSS slope over that window (the mixed
phase after its first 20%) under 1 MiB per 1,000 requests, the temp dir never over its budgets,
the log within its caps, no wrong answer to an honest client, honest p95 within 2x of the
honest-only phase. --trace: tracemalloc in the server from its start, what grew by source line
between marks (a diagnostic: tracing slows the server and its snapshots live in it, so such a
run's RSS and latency are not the soak's). --rows 18 / 34: each of that issue's findings once,
with its effect; --before DIR serves an older checkout (laid out as installed) to the same
clients.

server: the page's own process (a program file); serving: starting it on a free port, this
checkout or --before's; honest and hostile: the clients; phases: a phase of clients; sampling:
what is read of the server process; fill: the stores filled; rows18, rows34 (and rows34_*): the
issues' rows; wire: requests as bytes; report and plot: the figures, checks and picture; main: the
command.
"""
