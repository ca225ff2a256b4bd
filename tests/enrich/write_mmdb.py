#!/usr/bin/env python3
"""Writes MaxMind-format databases for the tests, with mmdb-writer (PyPI), in the GeoLite2
layouts netwatch reads: an ASN database (`autonomous_system_number`,
`autonomous_system_organization`) and a country one (`country.iso_code`).

Usage: write_mmdb.py asn|country OUT.mmdb NETWORK=VALUE...
  asn:     198.51.100.0/24=64500:EXAMPLE-NET
  country: 198.51.100.0/24=NL
"""

import sys

from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPSet


def main():
    kind, out, *pairs = sys.argv[1:]
    layout = "GeoLite2-ASN" if kind == "asn" else "GeoLite2-Country"
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=layout)
    for pair in pairs:
        network, value = pair.split("=", 1)
        if kind == "asn":
            number, org = value.split(":", 1)
            content = {
                "autonomous_system_number": MmdbU32(int(number)),
                "autonomous_system_organization": org,
            }
        else:
            content = {"country": {"iso_code": value}}
        writer.insert_network(IPSet([network]), content)
    writer.to_db_file(out)


if __name__ == "__main__":
    main()
