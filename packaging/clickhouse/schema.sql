-- netwatch's fleet history in ClickHouse: every sensor's records, read from Kafka.
--
-- Kafka-engine tables read the topics netwatch writes (`[export.kafka]`), each message one
-- JSON object as `netwatch monitor --format json` writes it, with the `sensor` it came from;
-- materialized views turn them into MergeTree tables, partitioned by day and kept for a
-- time (TTL), as FastNetMon's and Akvorado's schemas do. Each table keeps the whole record
-- too (`record`), so that a field not in a column is one JSONExtract away.
--
-- Before running it: put your brokers in `kafka_broker_list` (and the topics' prefix, if
-- `export.kafka.topic_prefix` is not `netwatch`). Then:
--   clickhouse-client --multiquery < schema.sql
-- The three queries a NOC asks are in queries.sql.

-- Intervals: one row per sensor, interface and interval.
CREATE TABLE IF NOT EXISTS netwatch_intervals_queue (message String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'kafka:9092',
         kafka_topic_list = 'netwatch.intervals.v1',
         kafka_group_name = 'clickhouse-netwatch-intervals',
         kafka_format = 'JSONAsString';

CREATE TABLE IF NOT EXISTS netwatch_intervals
(
    time            DateTime64(3, 'UTC'),
    sensor          LowCardinality(String),
    iface           LowCardinality(String),
    interval_ms     UInt32,
    packets         UInt64,
    bytes           UInt64,
    sources_tracked UInt32,
    record          String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toDate(time)
ORDER BY (sensor, iface, time)
TTL toDateTime(time) + INTERVAL 90 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS netwatch_intervals_mv TO netwatch_intervals AS
SELECT
    fromUnixTimestamp64Milli(JSONExtract(message, 'unix_ms', 'Int64'), 'UTC') AS time,
    JSONExtractString(message, 'sensor') AS sensor,
    JSONExtractString(message, 'iface') AS iface,
    JSONExtractUInt(message, 'interval_ms') AS interval_ms,
    JSONExtractUInt(message, 'packets') AS packets,
    JSONExtractUInt(message, 'bytes') AS bytes,
    JSONExtractUInt(message, 'sources_tracked') AS sources_tracked,
    message AS record
FROM netwatch_intervals_queue;

-- One row per sensor, interface and top source of each interval.
CREATE TABLE IF NOT EXISTS netwatch_interval_sources
(
    time      DateTime64(3, 'UTC'),
    sensor    LowCardinality(String),
    iface     LowCardinality(String),
    source    String,
    packets   UInt64,
    bytes     UInt64,
    tcp       UInt64,
    udp       UInt64,
    icmp      UInt64,
    syn       UInt64,
    fragments UInt64,
    reflected UInt64,
    -- The source's AS and country where the sensor's [enrich] knew them (0 and '' where not).
    asn       UInt32,
    as_org    LowCardinality(String),
    country   LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toDate(time)
ORDER BY (source, time)
TTL toDateTime(time) + INTERVAL 90 DAY;

-- A table made by an earlier netwatch gets the AS and country columns here; its view is
-- made again below with them (DROP VIEW netwatch_interval_sources_mv first, once).
ALTER TABLE netwatch_interval_sources ADD COLUMN IF NOT EXISTS asn UInt32;
ALTER TABLE netwatch_interval_sources ADD COLUMN IF NOT EXISTS as_org LowCardinality(String);
ALTER TABLE netwatch_interval_sources ADD COLUMN IF NOT EXISTS country LowCardinality(String);

CREATE MATERIALIZED VIEW IF NOT EXISTS netwatch_interval_sources_mv TO netwatch_interval_sources AS
SELECT
    fromUnixTimestamp64Milli(JSONExtract(message, 'unix_ms', 'Int64'), 'UTC') AS time,
    JSONExtractString(message, 'sensor') AS sensor,
    JSONExtractString(message, 'iface') AS iface,
    JSONExtractString(top, 'source') AS source,
    JSONExtractUInt(top, 'packets') AS packets,
    JSONExtractUInt(top, 'bytes') AS bytes,
    JSONExtractUInt(top, 'tcp') AS tcp,
    JSONExtractUInt(top, 'udp') AS udp,
    JSONExtractUInt(top, 'icmp') AS icmp,
    JSONExtractUInt(top, 'syn') AS syn,
    JSONExtractUInt(top, 'fragments') AS fragments,
    JSONExtractUInt(top, 'reflected') AS reflected,
    toUInt32(JSONExtractUInt(top, 'asn')) AS asn,
    JSONExtractString(top, 'as_org') AS as_org,
    JSONExtractString(top, 'country') AS country
FROM netwatch_intervals_queue
ARRAY JOIN JSONExtractArrayRaw(message, 'top') AS top;

-- Alerts: one row per alert line (start, update, end), kept a year.
CREATE TABLE IF NOT EXISTS netwatch_alerts_queue (message String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'kafka:9092',
         kafka_topic_list = 'netwatch.alerts.v1',
         kafka_group_name = 'clickhouse-netwatch-alerts',
         kafka_format = 'JSONAsString';

CREATE TABLE IF NOT EXISTS netwatch_alerts
(
    time     DateTime64(3, 'UTC'),
    sensor   LowCardinality(String),
    iface    LowCardinality(String),
    id       String,
    kind     LowCardinality(String),
    state    LowCardinality(String),
    severity LowCardinality(String),
    scope    LowCardinality(String),
    subject  String,
    attack   LowCardinality(String),
    observed Float64,
    peak     Float64,
    packets  UInt64,
    bytes    UInt64,
    victims  Array(String),
    capture  String,
    record   String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toDate(time)
ORDER BY (time, id)
TTL toDateTime(time) + INTERVAL 365 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS netwatch_alerts_mv TO netwatch_alerts AS
SELECT
    fromUnixTimestamp64Milli(JSONExtract(message, 'unix_ms', 'Int64'), 'UTC') AS time,
    JSONExtractString(message, 'sensor') AS sensor,
    JSONExtractString(message, 'iface') AS iface,
    JSONExtractString(message, 'id') AS id,
    JSONExtractString(message, 'kind') AS kind,
    JSONExtractString(message, 'state') AS state,
    JSONExtractString(message, 'severity') AS severity,
    JSONExtractString(message, 'scope') AS scope,
    JSONExtractString(message, 'subject') AS subject,
    JSONExtractString(message, 'attack', 'type') AS attack,
    JSONExtractFloat(message, 'observed') AS observed,
    JSONExtractFloat(message, 'peak') AS peak,
    JSONExtractUInt(message, 'packets') AS packets,
    JSONExtractUInt(message, 'bytes') AS bytes,
    arrayMap(victim -> JSONExtractString(victim, 'destination'),
             JSONExtractArrayRaw(message, 'victims')) AS victims,
    JSONExtractString(message, 'capture', 'file') AS capture,
    message AS record
FROM netwatch_alerts_queue;

-- Events (credentials, redacted unless the sensor runs with --show-secrets; HTTP; DNS).
CREATE TABLE IF NOT EXISTS netwatch_events_queue (message String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'kafka:9092',
         kafka_topic_list = 'netwatch.events.v1',
         kafka_group_name = 'clickhouse-netwatch-events',
         kafka_format = 'JSONAsString';

CREATE TABLE IF NOT EXISTS netwatch_events
(
    time   DateTime64(3, 'UTC'),
    sensor LowCardinality(String),
    iface  LowCardinality(String),
    event  LowCardinality(String),
    client String,
    server String,
    record String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toDate(time)
ORDER BY (event, time)
TTL toDateTime(time) + INTERVAL 90 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS netwatch_events_mv TO netwatch_events AS
SELECT
    fromUnixTimestamp64Milli(JSONExtract(message, 'unix_ms', 'Int64'), 'UTC') AS time,
    JSONExtractString(message, 'sensor') AS sensor,
    JSONExtractString(message, 'iface') AS iface,
    JSONExtractString(message, 'event') AS event,
    JSONExtractString(message, 'client') AS client,
    JSONExtractString(message, 'server') AS server,
    message AS record
FROM netwatch_events_queue;
