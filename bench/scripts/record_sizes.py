#!/usr/bin/env python3
"""How many bytes netwatch's records take on the wire to Kafka: as JSON (what the export
sends), and as the same record in Protocol Buffers' wire format (each field numbered, numbers
as varints or fixed64 doubles, text length-prefixed, objects as sub-messages, lists as
repeated fields: the size protobuf would give with a schema of the same fields); each alone
and gzip-compressed in batches of 500 (Kafka compresses batches).

Usage: record_sizes.py RECORDS.jsonl [TYPE]   (TYPE: interval by default)
"""

import gzip
import json
import struct
import sys


def varint(value):
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, wire, payload):
    return varint(number << 3 | wire) + payload


def message(obj):
    out = bytearray()
    for number, (key, value) in enumerate(obj.items(), start=1):
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, bool):
                out += field(number, 0, varint(int(item)))
            elif isinstance(item, int):
                out += field(number, 0, varint(item))
            elif isinstance(item, float):
                out += field(number, 1, struct.pack("<d", item))
            elif isinstance(item, str):
                data = item.encode()
                out += field(number, 2, varint(len(data)) + data)
            elif isinstance(item, dict):
                data = message(item)
                out += field(number, 2, varint(len(data)) + data)
    return bytes(out)


def main():
    path = sys.argv[1]
    kind = sys.argv[2] if len(sys.argv) > 2 else "interval"
    records = [json.loads(line) for line in open(path) if line.strip()]
    records = [r for r in records if r.get("type") == kind]
    records = [dict(r, sensor="sensor-1") for r in records]
    as_json = [json.dumps(r, separators=(",", ":")).encode() for r in records]
    as_proto = [message(r) for r in records]

    def batched(encoded):
        total = 0
        for start in range(0, len(encoded), 500):
            total += len(gzip.compress(b"".join(encoded[start : start + 500])))
        return total

    n = len(records)
    print(
        json.dumps(
            {
                "records": n,
                "json_bytes": round(sum(map(len, as_json)) / n),
                "protobuf_bytes": round(sum(map(len, as_proto)) / n),
                "json_gzip_bytes": round(batched(as_json) / n),
                "protobuf_gzip_bytes": round(batched(as_proto) / n),
            }
        )
    )


if __name__ == "__main__":
    main()
