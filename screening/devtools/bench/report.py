"""The bench's printed table and its JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROWS = (
    ("push", "push: simulator send -> operator screen"),
    ("push_from_inject", "push: incl. the inject HTTP request"),
    ("decide_http", "decide: POST round trip (client)"),
    ("decide_pbx_round_trip", "decide: pbx_round_trip_ms (server)"),
    ("decide_others_seen", "decide: POST start -> other operator sees final"),
    ("decide_all_others_seen", "decide: POST start -> all others saw final"),
    ("inject_http", "(inject request round trip)"),
    ("sim_send_after_inject_start", "(simulator send after inject start)"),
)
COLUMNS = ("count", "lost", "p50", "p90", "p99", "max")

NOTES = (
    "Times are milliseconds over loopback; every timestamp is time.time() in the bench process.",
    "push: from the simulator's own send stamp (SimCall.offered_at, taken right before the 30016 "
    "frame is queued; the simulator runs in-process) to the moment each operator's WebSocket "
    "delivered the call's first 'pending' push, per operator.",
    "push_from_inject: the same, but from just before POST /_sim/calls, so it includes the "
    "injection HTTP request up to the send (see 'simulator send after inject start').",
    "decide: one operator POSTs accept (round robin; with --concurrent-deciders K, K operators "
    "fire K POSTs for K calls at once) over its keep-alive connection; 'others' are the other "
    "operators' sockets seeing the status 'accepted', timed from the POST's start.",
    "lost: pushes not seen within the timeout (5 s) of their cause.",
    "All operator sockets share the bench's one event loop, and the bench shares the machine "
    "with the server process: per-operator numbers include that queueing.",
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_table(report: dict[str, Any]) -> str:
    config, machine, results = report["config"], report["machine"], report["results"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    lines = [
        f"machine: {machine['cpu_count']} cores ({machine['cpu_model']}), "
        f"Python {machine['python']}, {machine['platform']}",
        f"versions: {versions}",
        f"load average (1 min) at the start: {machine['load_average_1m']}"
        + (
            "  WARNING: above the core count, other work on the machine skews these numbers"
            if machine["load_average_1m"] > (machine["cpu_count"] or 1)
            else ""
        ),
        f"setup: {config['operators']} operators, {config['calls']} calls "
        f"(+{config['warmup']} warm-up), gap {config['gap']:g} s, "
        f"{config['concurrent_deciders']} concurrent decider(s), "
        f"channel layer {config['channel_layer']}, database SQLite",
        "",
    ]
    width = max(len(label) for _, label in ROWS)
    header = f"{'metric (ms)':<{width}}  " + "  ".join(f"{c:>7}" for c in COLUMNS)
    lines += [header, "-" * len(header)]
    for key, label in ROWS:
        row = results[key]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{_cell(row[c]):>7}" for c in COLUMNS))
    errors = report["errors"]
    lines += [
        "",
        f"decide failures: {errors['decide_failures']}, push sequence gaps: {errors['seq_gaps']}, "
        f"frames received: {errors['frames_received']}",
        *errors["messages"],
        "",
        *(f"note: {note}" for note in report["notes"]),
    ]
    return "\n".join(lines)


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_suite(combined: dict[str, Any]) -> str:
    """One table per setup: push vs floor per N, decide, throughput, decide during a login
    flood, memory."""
    lines: list[str] = []
    for res in combined["suite"]:
        machine = res["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        lines += [
            "",
            f"== {res['setup']}: {res['processes']}",
            f"machine: {machine['cpu_count']} cores ({machine['cpu_model']}), Python "
            f"{machine['python']}; {versions}",
            f"load average (1 min) at the start: {machine['load_average_1m']}; "
            f"fd limit used (soft, hard): {tuple(res['fd_limit'])}",
        ]
        if "push" in res:
            lines += [
                "",
                f"{'push, send -> screen (ms)':<28}{'N':>6}{'samples':>9}{'lost':>6}"
                f"{'p50':>8}{'p99':>8}{'max':>8}{'floor p99':>11}{'ratio':>7}",
            ]
            for n, row in res["push"].items():
                p, f = row["product"], row.get("floor", {})
                lines.append(
                    f"{'':<28}{n:>6}{p['count']:>9}{p['lost']:>6}{_ms(p['p50']):>8}"
                    f"{_ms(p['p99']):>8}{_ms(p['max']):>8}{_ms(f.get('p99')):>11}"
                    f"{_ms(row.get('ratio_p99')):>7}"
                )
                if f:
                    lines.append(
                        f"{'  floor (raw websockets)':<28}{n:>6}{f['count']:>9}{f['lost']:>6}"
                        f"{_ms(f['p50']):>8}{_ms(f['p99']):>8}{_ms(f['max']):>8}"
                    )
        lines += _context_lines(res)
        if "decide" in res:
            lines += _decide_lines(res["decide"])
            lines += _cpu_lines(res["decide"], res.get("cpu_stage_overhead_us"))
        if "throughput" in res:
            t = res["throughput"]
            lines += ["", f"throughput, {t['operators']} operators, {t['step_seconds']:g} s steps:"]
            for step in t["steps"]:
                lines.append(
                    f"  {step['rate']:>5g} calls/s (achieved {step['achieved_rate']:g}): push p50 "
                    f"{_ms(step['p50'])} p99 {_ms(step['p99'])} lost {step['lost']}"
                    f" -> {'ok' if step['ok'] else 'FAIL'}"
                )
            lines.append(f"  highest sustained rate: {t['max_rate']:g} calls/s")
        if "login" in res:
            lg = res["login"]
            lines += [
                "",
                f"{'decide during a login flood (ms)':<34}{'count':>6}{'p50':>8}{'p95':>8}"
                f"{'p99':>8}   flood answers (HTTP status: count), requests/s",
            ]
            for phase, row in lg["phases"].items():
                d, fl = row["decide_round_trip"], row["flood"]
                answers = ", ".join(f"{k}: {v}" for k, v in fl["statuses"].items()) or "-"
                lines.append(
                    f"{phase:<34}{d['count']:>6}{_ms(d['p50']):>8}{_ms(d['p95']):>8}"
                    f"{_ms(d['p99']):>8}   {answers}"
                    + (f", {fl['per_second']:g}/s" if fl["concurrent"] else "")
                )
                if row["decide_errors"]:
                    lines.append(f"  {row['decide_errors']} decisions failed")
        if "lookups" in res:
            lk = res["lookups"]
            lines += [
                "",
                f"external lookups, {lk['operators']} operators, budget {lk['budget_ms']} ms "
                f"(ms){'samples':>9}{'lost':>6}{'p50':>8}{'p99':>8}{'max':>8}",
            ]
            rows = [
                ("first push, lookups off", lk["off"]["push"]),
                ("first push, server hangs", lk["hang"]["push"]),
                ("first push, server answers", lk["answer"]["push"]),
                (
                    f"name after push ({lk['answer_delay_ms']} ms server)",
                    lk["answer"]["name_after_push"],
                ),
                ("  the same from the PBX's send", lk["answer"]["name_after_send"]),
            ]
            for label, s in rows:
                lines.append(
                    f"  {label:<50}{s['count']:>9}{s['lost']:>6}{_ms(s['p50']):>8}"
                    f"{_ms(s['p99']):>8}{_ms(s['max']):>8}"
                )
            lines.append(f"  target for the name: at most {lk['target_ms']} ms after the push")
        if "pbxdelay" in res:
            lines += _pbxdelay_lines(res["pbxdelay"])
        if "memory" in res:
            m = res["memory"]
            lines += [
                "",
                f"memory: web RSS {m['rss_before_kb'] / 1024:.1f} MB -> "
                f"{m['rss_connected_kb'] / 1024:.1f} MB with {m['operators']} operators: "
                f"{m['per_connection_kb']:.1f} KB per connection "
                f"(total/N {m['total_per_connection_kb']:.1f} KB)",
            ]
    return "\n".join(lines)


DECIDE_FIGURES = (
    "post_round_trip",
    "post_to_pbx_accept",
    "post_to_others_see_outcome",
    "server_share",
)


def _ratio(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _decide_lines(decide: dict[str, Any]) -> list[str]:
    """The product's decide figures beside the decision floor's, and their ratios."""
    lines = [
        "",
        f"{'decide (ms)':<44}{'count':>7}{'lost':>6}{'p50':>8}{'p99':>8}"
        f"{'floor p50':>11}{'floor p99':>11}{'ratio p50':>11}{'ratio p99':>11}",
    ]
    for k, row in decide.items():
        floor, ratios = row.get("floor", {}), row.get("ratios", {})
        for key in DECIDE_FIGURES:
            s, f, r = row[key], floor.get(key, {}), ratios.get(key, {})
            label = f"{k} concurrent: {key.replace('_', ' ')}"
            lines.append(
                f"{label:<44}{s['count']:>7}{s['lost']:>6}{_ms(s['p50']):>8}{_ms(s['p99']):>8}"
                f"{_ms(f.get('p50')):>11}{_ms(f.get('p99')):>11}"
                f"{_ratio(r.get('p50')):>11}{_ratio(r.get('p99')):>11}"
            )
        if row["errors"]:
            lines.append(f"  {row['errors']} decisions failed")
        if floor.get("errors"):
            lines.append(f"  {floor['errors']} floor decisions failed")
    return lines


def _cpu_lines(decide: dict[str, Any], overhead: dict[str, float] | None) -> list[str]:
    """CPU per decided call: per process, the server's total and its split by stage."""
    lines: list[str] = []
    for k, row in decide.items():
        c = row.get("cpu")
        if not c or not c.get("decisions"):
            continue
        lines += [
            "",
            f"CPU per decided call, {k} concurrent ({c['decisions']} decisions in "
            f"{c['seconds']:g} s), ms of CPU:{'per call':>12}{'net of idle':>13}",
        ]
        for name, p in c["processes"].items():
            loop = p.get("loop_thread_per_call_ms")
            lines.append(
                f"  {name + ' (' + p['role'] + ')':<52}{p['per_call_ms']:>12.2f}"
                f"{p['net_per_call_ms']:>13.2f}"
                + (f"   event-loop thread {loop:.2f}" if loop is not None else "")
            )
        floor = row.get("floor", {}).get("cpu", {})
        for name, p in floor.get("processes", {}).items():
            lines.append(
                f"  floor run: {name + ' (' + p['role'] + ')':<41}{p['per_call_ms']:>12.2f}"
                f"{p['net_per_call_ms']:>13.2f}"
            )
        lines.append(
            f"  {'server processes, total':<52}{c['server_per_call_ms']:>12.2f}"
            f"{c['server_net_per_call_ms']:>13.2f}"
        )
        if c.get("database_backends_missed"):
            missed = c["database_backends_missed"]
            lines.append(f"  ({missed} PostgreSQL backends closed inside the window: not counted)")
        if c["with_database_per_call_ms"] != c["server_per_call_ms"]:
            lines.append(
                f"  {'  with its database backends':<52}{c['with_database_per_call_ms']:>12.2f}"
            )
        ratio = row.get("ratios", {}).get("cpu_per_call")
        if ratio is not None:
            lines.append(f"  {'  ratio to the floor (process and backends)':<52}{ratio:>12.2f}")
        stages = ", ".join(f"{s} {v:.2f}" for s, v in c["stages_per_call_ms"].items())
        lines.append(
            f"  by stage: {stages or '-'}; unaccounted {c['unaccounted_per_call_ms']:.2f} "
            f"(net of idle {c['unaccounted_net_per_call_ms']:.2f})"
        )
        for name, split in c.get("stages_by_process_ms", {}).items():
            if split:
                parts = ", ".join(f"{s} {v:.2f}" for s, v in split.items())
                lines.append(f"    {name}: {parts}")
    if overhead and lines:
        lines.append(
            f"  (a stage costs {overhead['sync_entry_us']:.2f} us per entry, "
            f"{overhead['async_call_us']:.2f} us per async call, in the bench process)"
        )
    return lines


def _context_lines(res: dict[str, Any]) -> list[str]:
    """The card's context: reading it (card) and what it costs the push (push_context)."""
    lines: list[str] = []
    if "card" in res:
        c = res["card"]
        lines += [
            "",
            f"card context read, {c['calls']:,} calls, {c.get('precedent_rows', 0):,} numbers "
            f"with precedent (rebuilt in {c.get('rebuild_s', '-')} s); {c['reads']} numbers "
            f"({c['with_precedent']} with precedent, {c['with_notes']} with notes, "
            f"{c['with_suggestion']} with a suggestion), ms:",
        ]
        for kind in ("precedent", "notes", "card_context"):
            t = c[f"{kind}_ms"]
            lines.append(
                f"  {kind:<14} p50 {_ms2(t['p50'])} p99 {_ms2(t['p99'])} max {_ms2(t['max'])}"
            )
    if "intake" in res:
        r = res["intake"]
        lines += ["", f"intake (receive_call, in process), {r['calls']} calls each way, ms:"]
        for variant, label in (("chain_ms", "chain"), ("no_chain_ms", "no chain")):
            t = r[variant]
            lines.append(
                f"  {label:<9} mean {_ms2(t['mean'])} p50 {_ms2(t['p50'])} "
                f"p99 {_ms2(t['p99'])} max {_ms2(t['max'])}"
            )
        lines.append(f"  the chain adds: mean {r['added_ms_mean']} ms, p50 {r['added_ms_p50']} ms")
    if "webhooks" in res:
        r = res["webhooks"]
        lines += [
            "",
            f"webhook delivery, state change -> receiver, {r['calls']} calls at "
            f"{r['achieved_rate']:g}/s, {r.get('endpoints', 1)} endpoints ({r['events']} events, "
            f"{r['received']} received, {r['duplicates']} duplicates, "
            f"{r['not_delivered']} not delivered), ms:",
        ]
        extra = [
            ("(arrival -> push)", r["intake_to_push"]),
            ("(push -> call.received)", r["received_after_push"]),
        ]
        for label, t in [("all", r["all"]), *r["by_type"].items(), *extra]:
            lines.append(
                f"  {label:<24} p50 {_ms(t['p50'])} p99 {_ms(t['p99'])} max {_ms(t['max'])}"
            )
    if "push_context" in res:
        r = res["push_context"]
        lines += ["", f"push with and without the card's context, {r['operators']} operators (ms):"]
        for variant in ("plain", "context"):
            v = r[variant]
            lines.append(
                f"  {variant:<8} p50 {_ms(v['p50'])} p99 {_ms(v['p99'])} max {_ms(v['max'])} "
                f"lost {v['lost']}"
            )
        lines.append(f"  context / plain: p50 {r['ratio_p50']}, p99 {r['ratio_p99']}")
    return lines


def _pbxdelay_lines(r: dict[str, Any]) -> list[str]:
    """The PBX across a network: decisions with the connection opened ahead, and without."""
    rtt = 2 * r["delay_ms"]
    lines = [
        "",
        f"PBX behind TLS and {r['delay_ms']:g} ms each way (round trip {rtt:g} ms), one decision "
        f"at a time after {r['read_seconds']:g} s on the card:",
        f"  {'':<46}{'count':>6}{'p50 ms':>9}{'p99 ms':>9}{'p50 RTT':>9}{'p99 RTT':>9}",
    ]
    for variant, label in (("off", "connection opened at POST"), ("on", "connection opened ahead")):
        row = r.get(variant)
        if row is None:
            continue
        for key, what in (
            ("post_to_pbx_accept", "POST -> PBX has it"),
            ("post_round_trip", "POST round trip"),
        ):
            s, t = row[key], row[f"{key}_rtts"]
            lines.append(
                f"  {label + ': ' + what:<46}{s['count']:>6}{_ms(s['p50']):>9}{_ms(s['p99']):>9}"
                f"{_ms2(t['p50']):>9}{_ms2(t['p99']):>9}"
            )
        lines.append(
            f"  {'':<4}decisions that opened a connection when sent: "
            f"{row.get('decisions_on_a_new_connection', '-')}"
        )
        if row["errors"]:
            lines.append(f"  {row['errors']} decisions failed")
    lines.append("  target: POST -> PBX has it within 1.3 round trips (p50), opened ahead")
    return lines


def _ms2(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"
