'use strict'
// cote 1.2.0 roles for warren's side-by-side benchmark. `go run ./bench`
// starts this script inside a network namespace it created, with the role and
// its parameters as JSON in WBENCH_CONFIG, and reads one JSON event per line
// on stdout. It mirrors the Go roles in bench/roles_warren.go: same workload,
// same histogram (bench/internal/hist), same events.
//
// cote discovers by UDP broadcast to 255.255.255.255, so this script refuses
// to run in the benchmark's own (host) network namespace.

const fs = require('fs')

const cfg = JSON.parse(process.env.WBENCH_CONFIG || '{}')

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n')
}

function fail(msg) {
  emit({ ev: 'error', msg: String(msg) })
  process.exit(1)
}

// Safety net: never discover in the host namespace.
{
  let self = ''
  try {
    self = fs.readlinkSync('/proc/self/ns/net')
  } catch (e) {
    // leave self empty: refused below
  }
  const host = process.env.WBENCH_HOSTNS || ''
  if (!host || !self || self === host) {
    process.stderr.write(`cote ${cfg.role}: refusing to run outside the benchmark's network namespace\n`)
    process.exit(3)
  }
}

// Every process has a hard lifetime, whatever happens to the parent.
setTimeout(() => {
  process.stderr.write(`cote ${cfg.role}: maximum lifetime reached\n`)
  process.exit(4)
}, cfg.max_life_ms || 60000).unref()

const cote = require('cote')

// now returns wall-clock nanoseconds (CLOCK_REALTIME, like Go's time.Now),
// with sub-millisecond resolution.
const { performance } = require('perf_hooks')
function now() {
  return Math.round((performance.timeOrigin + performance.now()) * 1e6)
}
function mono() {
  return Number(process.hrtime.bigint())
}

// Hist is bench/internal/hist in JavaScript: 64 exact values, then 32
// sub-buckets per power of two.
const SUB_BITS = 6
const HALF = 1 << (SUB_BITS - 1)
const BUCKETS = (1 << SUB_BITS) + 41 * HALF
function bitLen(v) {
  if (v < 4294967296) return 32 - Math.clz32(v)
  return 64 - Math.clz32(Math.floor(v / 4294967296))
}
class Hist {
  constructor() {
    this.counts = new Float64Array(BUCKETS)
    this.n = 0
  }
  record(ns) {
    let v = Math.max(0, Math.floor(ns))
    let i
    if (v < 1 << SUB_BITS) {
      i = v
    } else {
      const shift = bitLen(v) - SUB_BITS
      const m = Math.floor(v / 2 ** shift)
      i = Math.min(BUCKETS - 1, (1 << SUB_BITS) + (shift - 1) * HALF + (m - HALF))
    }
    this.counts[i]++
    this.n++
  }
  static value(i) {
    if (i < 1 << SUB_BITS) return i
    const k = i - (1 << SUB_BITS)
    const shift = Math.floor(k / HALF) + 1
    const m = (k % HALF) + HALF
    return m * 2 ** shift + 2 ** shift / 2
  }
  quantile(q) {
    if (this.n === 0) return 0
    const rank = Math.min(this.n, Math.max(1, Math.ceil(q * this.n))) // nearest rank
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]
      if (seen >= rank) return Hist.value(i)
    }
    return Hist.value(BUCKETS - 1)
  }
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function until(cond, ms, what) {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

// stdin carries commands from the benchmark ("go").
function waitCommand(word) {
  return new Promise(resolve => {
    let buf = ''
    const onData = d => {
      buf += d.toString()
      if (buf.split('\n').some(l => l.trim() === word)) {
        process.stdin.off('data', onData)
        resolve()
      }
    }
    process.stdin.on('data', onData)
  })
}

function payload(n) {
  return 'x'.repeat(n)
}

const name = cfg.role + '-' + process.pid

function responder() {
  const r = new cote.Responder({ name, key: 'bench' })
  r.on('echo', (req, cb) => cb(null, req.data))
  const t = setInterval(() => {
    if (r.discovery) {
      clearInterval(t)
      emit({ ev: 'ready' })
    }
  }, 5)
}

// send is one request with a callback; cote has no error for a lost
// responder, so the callback may never run.
function newRequester() {
  return new cote.Requester({ name, key: 'bench' })
}

async function requesterLoad() {
  const req = newRequester()
  const data = payload(cfg.payload || 16)
  const responders = cfg.responders || 1
  await until(() => req.sock.socks.length >= responders, 30000, `${responders} responders`)
  await new Promise(resolve => req.send({ type: 'echo', data }, resolve))
  emit({ ev: 'first', t: now() })

  let phase = 0 // 0 warm-up, 1 measuring, 2 done
  let count = 0
  const h = new Hist()
  let outstanding = 0
  const worker = () => {
    if (phase === 2) return
    const start = mono()
    outstanding++
    req.send({ type: 'echo', data }, (err, res) => {
      outstanding--
      if (err || res.length !== data.length) fail(`bad reply: ${err && err.message}`)
      if (phase === 1) {
        count++
        h.record(mono() - start)
      }
      worker()
    })
  }
  for (let i = 0; i < cfg.conc; i++) worker()
  await sleep(cfg.warmup_ms)
  phase = 1
  const t0 = mono()
  emit({ ev: 'window' }) // the benchmark samples CPU time now and at window-end
  await sleep(cfg.measure_ms)
  phase = 2
  const secs = (mono() - t0) / 1e9
  emit({ ev: 'window-end' })
  emit({ ev: 'result', n: count, secs, rate: count / secs, p50: h.quantile(0.5), p99: h.quantile(0.99) })
  await until(() => outstanding === 0, 5000, 'outstanding replies')
  process.exit(0)
}

// Cold start: the time to the first reply is measured from before this
// process was started, by the benchmark.
function requesterFirst() {
  const req = newRequester()
  req.send({ type: 'echo', data: payload(16) }, () => {
    emit({ ev: 'first', t: now() })
    setTimeout(() => process.exit(0), 10)
  })
}

// Held: send count requests while no responder exists (cote queues them),
// then report when all are answered.
function requesterHeld() {
  const req = newRequester()
  const data = payload(16)
  let answered = 0
  for (let i = 0; i < cfg.count; i++) {
    req.send({ type: 'echo', data }, () => {
      answered++
      if (answered === cfg.count) {
        emit({ ev: 'done', t: now() })
        setTimeout(() => process.exit(0), 10)
      }
    })
  }
  emit({ ev: 'held', n: req.sock.queue.length })
}

// Hold: like held, but waits for "go" first, for memory measurements.
async function requesterHold() {
  const req = newRequester()
  const data = payload(16)
  emit({ ev: 'ready' })
  await waitCommand('go')
  for (let i = 0; i < cfg.count; i++) req.send({ type: 'echo', data }, () => {})
  emit({ ev: 'held', n: req.sock.queue.length })
}

// Fail: load over two responders, one of which the benchmark kills; counts
// what happens to every request (ids in the payload detect duplicates).
async function requesterFail() {
  const req = newRequester()
  const responders = cfg.responders || 2
  await until(() => req.sock.socks.length >= responders, 30000, `${responders} responders`)
  const pad = payload(Math.max(0, (cfg.payload || 16) - 8))
  let stop = false
  let issued = 0
  let answered = 0
  let failed = 0
  let dup = 0
  const seen = new Uint8Array(1 << 24)
  const worker = () => {
    if (stop) return
    const id = issued++
    const data = String(id).padStart(8, '0') + pad
    req.send({ type: 'echo', data }, (err, res) => {
      if (err) {
        failed++
      } else if (typeof res !== 'string' || res !== data || seen[id % seen.length]) {
        dup++
      } else {
        seen[id % seen.length] = 1
        answered++
      }
      worker()
    })
  }
  for (let i = 0; i < cfg.conc; i++) worker()
  emit({ ev: 'measuring' })
  await sleep(cfg.measure_ms)
  stop = true
  const deadline = Date.now() + cfg.grace_ms
  while (answered + failed + dup < issued && Date.now() < deadline) await sleep(10)
  emit({
    ev: 'result',
    issued,
    answered,
    failed,
    retried: 0,
    lost: issued - answered - failed - dup,
    dup,
  })
  process.exit(0)
}

function publisher() {
  const pub = new cote.Publisher({ name, key: 'bench' })
  const data = payload(cfg.payload || 16)
  const subs = cfg.subs || 1
  const socks = () => (pub.sock && pub.sock.sock && pub.sock.sock.socks) || []
  ;(async () => {
    await until(() => socks().length >= subs, 30000, `${subs} subscribers`)
    emit({ ev: 'ready' })
    const end = Date.now() + cfg.measure_ms + cfg.warmup_ms + (cfg.grace_ms || 2000)
    // Publish in batches, yielding to the event loop between them, and wait
    // for the sockets to drain when a subscriber falls behind, so memory stays
    // bounded and the figure is what subscribers really receive.
    const limit = 4 << 20
    const step = () => {
      if (Date.now() > end) process.exit(0)
      for (let i = 0; i < 256; i++) pub.publish('bench.event', data)
      const full = socks().find(s => s.writableLength > limit)
      if (full) full.once('drain', step)
      else setImmediate(step)
    }
    step()
  })()
}

function subscriber() {
  const sub = new cote.Subscriber({ name, key: 'bench', subscribesTo: ['bench.event'] })
  let phase = -1 // -1 nothing yet, 0 warm-up, 1 measuring, 2 done
  let count = 0
  let t0 = 0
  sub.on('bench.event', () => {
    if (phase === 1) count++
    else if (phase === -1) {
      phase = 0
      setTimeout(() => {
        phase = 1
        t0 = mono()
        setTimeout(() => {
          phase = 2
          const secs = (mono() - t0) / 1e9
          emit({ ev: 'result', n: count, secs, rate: count / secs })
        }, cfg.measure_ms)
      }, cfg.warmup_ms)
    }
  })
  emit({ ev: 'ready' })
}

const roles = {
  responder,
  idle: responder,
  requester: () => {
    switch (cfg.mode) {
      case 'load':
        return requesterLoad()
      case 'first':
        return requesterFirst()
      case 'held':
        return requesterHeld()
      case 'hold':
        return requesterHold()
      case 'fail':
        return requesterFail()
      default:
        return fail(`unknown requester mode ${cfg.mode}`)
    }
  },
  publisher,
  subscriber,
}

const role = roles[cfg.role]
if (!role) fail(`unknown role ${cfg.role}`)
Promise.resolve(role()).catch(fail)
