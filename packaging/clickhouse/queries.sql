-- The three questions a NOC asks of the fleet's history (packaging/clickhouse/schema.sql).
-- Each takes its values as query parameters:
--   clickhouse-client --param_since='2026-12-07 00:00:00' --param_until='2026-12-08 00:00:00' \
--                     --param_source='198.51.100.7' --multiquery < queries.sql

-- 1. Top sources across all sensors over a time range: packets, bytes, on how many sensors,
--    and their AS and country as last reported by a sensor that knew them (0 and '' where
--    none did).
SELECT
    source,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    uniqExact(sensor) AS sensors,
    argMaxIf(asn, time, asn != 0) AS asn,
    argMaxIf(country, time, country != '') AS country
FROM netwatch_interval_sources
WHERE time >= {since:DateTime64(3, 'UTC')} AND time < {until:DateTime64(3, 'UTC')}
GROUP BY source
ORDER BY packets DESC, source
LIMIT 20
FORMAT JSONEachRow;

-- 2. The attacks of the day with their victims: one row per event, from its start line.
SELECT
    id,
    sensor,
    iface,
    kind,
    subject,
    attack,
    min(time) AS started,
    max(peak) AS peak,
    max(packets) AS packets,
    arrayDistinct(arrayFlatten(groupArray(victims))) AS victims
FROM netwatch_alerts
WHERE toDate(time) = toDate({since:DateTime64(3, 'UTC')})
GROUP BY id, sensor, iface, kind, subject, attack
ORDER BY started, id
FORMAT JSONEachRow;

-- 3. One source's history: its traffic interval by interval, on every sensor.
SELECT
    time,
    sensor,
    iface,
    packets,
    bytes
FROM netwatch_interval_sources
WHERE source = {source:String}
ORDER BY time, sensor
FORMAT JSONEachRow;
