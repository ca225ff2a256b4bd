#!/usr/bin/env python3
"""Runs netwatch's ClickHouse schema and queries (packaging/clickhouse/) on ClickHouse's own
engine, chdb, over the records a test consumed from its Kafka broker.

The Kafka-engine tables become Null tables (chdb reads no broker): the records are inserted
into them as the Kafka engine would hand them over, one JSON message each, and the shipped
materialized views fill the MergeTree tables. Then the shipped queries run, their parameters
substituted as clickhouse-client does, and their answers are printed as one JSON object:
{"top_sources": [...], "attacks": [...], "history": [...]}.

Usage: check.py SCHEMA QUERIES RECORDS_DIR SINCE UNTIL SOURCE
RECORDS_DIR holds intervals.jsonl, alerts.jsonl and events.jsonl (one message a line).
"""

import json
import re
import sys
import tempfile

import chdb.session


def statements(text):
    """The SQL statements of a file, comments left out."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def main():
    schema, queries, records, since, until, source = sys.argv[1:7]
    with tempfile.TemporaryDirectory() as path:
        session = chdb.session.Session(path)
        for statement in statements(open(schema).read()):
            # The Kafka engine's table, as a Null one that feeds the same views.
            statement = re.sub(
                r"ENGINE\s*=\s*Kafka\s+SETTINGS[^;]*$", "ENGINE = Null", statement, flags=re.S
            )
            session.query(statement)
        for topic, table in [
            ("intervals", "netwatch_intervals_queue"),
            ("alerts", "netwatch_alerts_queue"),
            ("events", "netwatch_events_queue"),
        ]:
            with open(f"{records}/{topic}.jsonl") as file:
                messages = [line.strip() for line in file if line.strip()]
            for start in range(0, len(messages), 500):
                chunk = "\n".join(messages[start : start + 500])
                if chunk:
                    session.query(f"INSERT INTO {table} FORMAT JSONAsString\n{chunk}")
        values = {
            "since": f"toDateTime64('{since}', 3, 'UTC')",
            "until": f"toDateTime64('{until}', 3, 'UTC')",
            "source": "'" + source.replace("\\", "\\\\").replace("'", "\\'") + "'",
        }
        answers = {}
        for name, statement in zip(["top_sources", "attacks", "history"], statements(open(queries).read())):
            text = re.sub(r"\{(\w+):[^}]*\}", lambda m: values[m.group(1)], statement)
            text = text.replace("FORMAT JSONEachRow", "")
            result = session.query(text, "JSONEachRow")
            answers[name] = [json.loads(line) for line in str(result).splitlines() if line.strip()]
        counts = {}
        for table in ["netwatch_intervals", "netwatch_interval_sources", "netwatch_alerts", "netwatch_events"]:
            counts[table] = int(str(session.query(f"SELECT count() FROM {table}", "CSV")).strip())
        answers["counts"] = counts
        session.close()
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
