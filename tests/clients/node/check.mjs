// The official ClickHouse Node.js client against a service's ClickHouse HTTP interface: reads
// the table tests/test_clients.py made (its rows follow formulas of their number n) as JSON,
// JSONEachRow (streamed) and CSVWithNames, checks every value against the formula, inserts,
// and prints one JSON line of what it found.
// Usage: node check.mjs URL PASSWORD CA_FILE TABLE ROWS
import { readFileSync } from 'node:fs'
import { createClient } from '@clickhouse/client'

const [url, password, caFile, table, rowsText] = process.argv.slice(2)
const rows = Number(rowsText)
const client = createClient({
  url,
  username: 'default',
  password,
  tls: { ca_cert: readFileSync(caFile) },
  request_timeout: 600_000,
})

const pad = (value, width) => String(value).padStart(width, '0')
const day = (ms) => new Date(ms).toISOString().slice(0, 10)
const ipv4 = (n) => [24, 16, 8, 0].map((shift) => (n >>> shift) & 255).join('.')

// Each column's value for row n, as the engine's JSON formats write it (64-bit integers as
// numbers: output_format_json_quote_64bit_integers is off by default in this engine).
function expected(n) {
  return {
    id: n,
    i32: -n,
    f64: n / 8,
    dec: n / 10000,
    s: `s${n}`,
    fs: pad(n, 8),
    dt: new Date(n * 1001).toISOString().replace('T', ' ').replace('Z', ''),
    d32: day(Date.UTC(1950, 0, 1) + (n % 40000) * 86_400_000),
    uuid: `00000000-0000-0000-0000-${n.toString(16).padStart(12, '0')}`,
    ip4: ipv4(n),
    ip6: `::ffff:${ipv4(n)}`,
    nul: n % 3 === 0 ? null : n,
    arr: [n % 1000, n % 7],
    m: { k: n },
    t: [n % 256, String(n)],
    lc: String(n % 10),
    e: n % 2 === 0 ? 'a' : 'b',
  }
}

let mismatches = 0
const firstMismatch = []
function check(row, n) {
  const want = JSON.stringify(expected(n))
  const got = JSON.stringify(row)
  if (want !== got) {
    mismatches += 1
    if (firstMismatch.length < 3) firstMismatch.push({ n, want, got })
  }
}

const query = `SELECT * FROM ${table} ORDER BY id`
const found = {}

// A result set in JSON (one document: header, data, statistics).
const whole = await (await client.query({ query, format: 'JSON' })).json()
whole.data.forEach((row, n) => check(row, n))
found.json = whole.data.length
found.jsonRowsField = whole.rows

// JSONEachRow, streamed row by row.
let n = 0
const stream = (await client.query({ query, format: 'JSONEachRow' })).stream()
for await (const batch of stream) {
  for (const line of batch) {
    check(line.json(), n)
    n += 1
  }
}
found.jsonEachRow = n

// CSVWithNames: one header line, then the rows.
const csv = await (await client.query({ query: `SELECT id, s FROM ${table} ORDER BY id`, format: 'CSVWithNames' })).text()
const lines = csv.trimEnd().split('\n')
found.csvHeaders = lines.filter((line) => line === '"id","s"').length
found.csv = lines.length - 1
lines.slice(1).forEach((line, i) => {
  if (line !== `${i},"s${i}"`) mismatches += 1
})

// An insert, read back.
await client.command({ query: 'CREATE TABLE node_insert (a UInt32, b String) ENGINE = MergeTree ORDER BY a' })
const values = Array.from({ length: 100_000 }, (_, i) => ({ a: i, b: `v${i}` }))
await client.insert({ table: 'node_insert', values, format: 'JSONEachRow' })
const counted = await (await client.query({ query: 'SELECT count() AS c, sum(a) AS s FROM node_insert', format: 'JSONEachRow' })).json()
found.inserted = counted[0]

await client.close()
console.log(JSON.stringify({ rows, found, mismatches, firstMismatch }))
