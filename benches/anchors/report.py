"""Renders the load comparison: markdown tables with AetherFlow/alternative ratios on stdout and
one PNG bar chart per scenario.

    python3 report.py results.jsonl --charts ../charts > report.md

Input: the JSON lines `loadgen --json` appends ({server, scenario, params, report}). The
reference for every ratio is AetherFlow in durable mode (`aetherflow-durable`), or `--base`
against `--alternatives` (cluster.sh: the cluster against Hocuspocus with Redis and against the
single-node relay).
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASE = "aetherflow-durable"
ALTERNATIVES = ["y-websocket", "hocuspocus"]


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                runs.setdefault(row["scenario"], {})[row["server"]] = row
    return runs


def ratio(ours, theirs):
    if ours is None or theirs is None or theirs == 0:
        return "n/a"
    return f"{ours / theirs:.2f}"


def fmt(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def chart(path, title, ylabel, servers, series):
    """series: list of (label, [value per server])."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series):
        xs = [j + i * width for j in range(len(servers))]
        ax.bar(xs, [v or 0 for v in values], width, label=label)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(servers))])
    ax.set_xticklabels(servers, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ratios_line(metric, runs, key, better):
    ours = key(runs[BASE]["report"]) if BASE in runs else None
    parts = []
    for alt in ALTERNATIVES:
        theirs = key(runs[alt]["report"]) if alt in runs else None
        parts.append(f"{alt} {ratio(ours, theirs)}")
    return f"{BASE} / alternative, {metric} ({better} is better): " + ", ".join(parts)


def ingest_section(runs, charts):
    servers = list(runs)
    rows = [[s, fmt(runs[s]["params"]["updates"]), fmt(runs[s]["report"]["seconds"], 3),
             fmt(runs[s]["report"]["updates_per_s"], 0)] for s in servers]
    chart(os.path.join(charts, "ingest.png"), "ingest: trace replay, end to end", "updates/s",
          servers, [("updates/s", [runs[s]["report"]["updates_per_s"] for s in servers])])
    trace = next(iter(runs.values()))["params"]["trace"]
    return "\n\n".join([
        f"#### ingest ({trace})",
        table(["server", "updates", "seconds", "updates/s"], rows),
        ratios_line("updates/s", runs, lambda r: r["updates_per_s"], "higher"),
        "![ingest](charts/ingest.png)",
    ])


def traffic_section(name, runs, charts):
    servers = list(runs)
    rows = []
    for s in servers:
        r = runs[s]["report"]
        lat = r["latency"]
        rows.append([s, fmt(r["readers"]), fmt(r["writers"]), fmt(r["failed_connections"]),
                     fmt(r["updates_sent"]), fmt(r["deliveries"]), fmt(r["missing"]),
                     fmt(r["deliveries_per_s"], 0), fmt(lat["p50_ms"], 2), fmt(lat["p99_ms"], 2),
                     fmt(lat["max_ms"], 1)])
    chart(os.path.join(charts, f"{name}.png"), f"{name}: delivery latency", "ms", servers,
          [(q, [runs[s]["report"]["latency"][f"{q}_ms"] for s in servers])
           for q in ("p50", "p99")])
    params = next(iter(runs.values()))["params"]
    return "\n\n".join([
        f"#### {name} ({', '.join(f'{k} {v}' for k, v in params.items())})",
        table(["server", "readers", "writers", "failed conns", "updates sent", "deliveries",
               "missing", "deliveries/s", "p50 ms", "p99 ms", "max ms"], rows),
        ratios_line("p99 latency", runs, lambda r: r["latency"]["p99_ms"], "lower"),
        ratios_line("p50 latency", runs, lambda r: r["latency"]["p50_ms"], "lower"),
        f"![{name}](charts/{name}.png)",
    ])


def idle_section(name, runs, charts):
    servers = list(runs)
    rows = []
    for s in servers:
        r = runs[s]["report"]
        per = r["bytes_per_connection"]
        rows.append([s, fmt(r["connections"]), fmt(r["docs"]), fmt(r["synced"]), fmt(r["failed"]),
                     fmt(r["still_open"]), fmt(r["connect_s"], 1),
                     fmt(r["rss_before"] and r["rss_before"] / 2**20),
                     fmt(r["rss_after"] and r["rss_after"] / 2**20),
                     fmt(per and per / 1024, 2)])
    per_conn = [(runs[s]["report"]["bytes_per_connection"] or 0) / 1024 for s in servers]
    chart(os.path.join(charts, f"{name}.png"), f"{name}: server memory per connection",
          "KiB per connection", servers, [("KiB/conn", per_conn)])
    params = next(iter(runs.values()))["params"]
    return "\n\n".join([
        f"#### {name} ({params['connections']:,} connections over {params['docs']:,} documents)",
        table(["server", "connections", "docs", "synced", "failed", "still open", "connect s",
               "RSS before MiB", "RSS after MiB", "KiB/conn"], rows),
        ratios_line("memory per connection", runs, lambda r: r["bytes_per_connection"], "lower"),
        f"![{name}](charts/{name}.png)",
    ])


def failover_section(runs):
    rows = []
    for s in runs:
        r = runs[s]["report"]
        rows.append([s, fmt(r["connections"]), fmt(r["docs"]), fmt(r["failed_connections"]),
                     fmt(r["seen_before_kill"]), fmt(r["displaced"]), fmt(r["resynced"]),
                     fmt(r["failed_reconnects"]), fmt(r["kill_to_all_synced_s"], 2),
                     fmt(r["updates_lost"])])
    return "\n\n".join([
        "#### failover (instance A killed with SIGKILL, its clients resync on B)",
        table(["server", "connections", "docs", "failed conns", "seen before kill", "displaced",
               "resynced", "failed reconnects", "kill to all synced s", "updates lost"], rows),
        ratios_line("kill to all synced", runs, lambda r: r["kill_to_all_synced_s"], "lower"),
    ])


def main():
    global BASE, ALTERNATIVES
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--charts", required=True)
    parser.add_argument("--base", default=BASE, help="the server every ratio is taken of")
    parser.add_argument("--alternatives", nargs="+", default=ALTERNATIVES,
                        help="the servers it is compared with")
    args = parser.parse_args()
    BASE, ALTERNATIVES = args.base, args.alternatives
    os.makedirs(args.charts, exist_ok=True)
    runs = load(args.results)
    sections = []
    for name, by_server in runs.items():
        if name == "ingest":
            sections.append(ingest_section(by_server, args.charts))
        elif name in ("fanout", "mixed"):
            sections.append(traffic_section(name, by_server, args.charts))
        elif name == "failover":
            sections.append(failover_section(by_server))
        else:
            sections.append(idle_section(name, by_server, args.charts))
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
