"""`make soak`: honest drawings beside issue 18's and 34's hostile requests against the page.

A fixed number of requests (default 20,000; minutes, not hours) against the page launched on
loopback with 127.0.0.1 as its trusted proxy, so every simulated client has its own address
(X-Forwarded-For). First an honest-only phase (the latency baseline), then honest clients beside
hostile ones. Samples the server's RSS, open file descriptors, temp-dir bytes and files and log
bytes every second; writes a JSON summary and a plot.

    python -m benchmarks.soak --models models --requests 20000 --out benchmarks/soak.json
    python -m benchmarks.soak --rows 34 --models models [--before DIR] --out rows.json

Checks: RSS slope after warm-up under 1 MiB per 1,000 requests, the temp dir never over its
budgets, the log within its caps, no wrong answer to an honest client, honest p95 within 2x of
the honest-only phase. --rows 18 / 34: each of that issue's findings once, with its effect;
--before DIR serves an older checkout (laid out as installed) to the same clients.

server: the page's own process (a program file); serving: starting it on a free port, this
checkout or --before's; honest and hostile: the clients; phases: a phase of clients; sampling:
what is read of the server process; rows18, rows34 (and rows34_*): the issues' rows; wire:
requests as bytes; report and plot: the figures, checks and picture; main: the command.
"""
