#!/usr/bin/env node
// A MAVLink UDP endpoint built on node-mavlink: the foreign peer of dronelink's tunnel
// tests, as an autopilot or as a ground station. It is driven by JSON lines on standard
// input and reports every datagram it receives as a JSON line on standard output.
//
//   node peer.js --role autopilot|gcs [--bind HOST:PORT] [--remote HOST:PORT] [--sysid N --compid N]
//
// Without --remote it answers the most recent sender. As an autopilot it acknowledges
// COMMAND_LONG (result ACCEPTED), answers PARAM_REQUEST_LIST with --params PARAM_VALUEs and
// PARAM_REQUEST_READ with one.
//
// Commands (one JSON object per line):
//   {"send": "CommandLong", "fields": {...}, "signed": false, "version": 2}  build and send one frame
//   {"raw": "<hex>"}                                         send these bytes as one datagram
//   {"stream": [{"send": "Attitude", "hz": 50}, ...], "seconds": 5}   send at rates, then report
//   {"quit": true}
// Output lines:
//   {"ready": "HOST:PORT"}
//   {"dgram": "<hex>", "frames": [{"msgid": 76, "name": "COMMAND_LONG", "sysid": 255, "compid": 190,
//     "seq": 3, "hex": "<hex>", "signed": false, "fields": {...}}], "t": <ms since start>}
//   {"sent": "<hex>"}   {"streamed": {"Attitude": 250, ...}}
const dgram = require('node:dgram')
const readline = require('node:readline')
const { MavLinkProtocolV1, MavLinkProtocolV2, MavLinkPacketSplitter, MavLinkPacketParser, minimal, common, ardupilotmega } = require('node-mavlink')

const REGISTRY = { ...minimal.REGISTRY, ...common.REGISTRY, ...ardupilotmega.REGISTRY }
const CLASSES = { ...minimal, ...common, ...ardupilotmega }

const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const role = args.role || 'autopilot'
const sysid = Number(args.sysid ?? (role === 'autopilot' ? 1 : 255))
const compid = Number(args.compid ?? (role === 'autopilot' ? 1 : 190))
const paramCount = Number(args.params ?? 20)
const signKey = Buffer.alloc(32, 0x42)
const start = Date.now()

const hostPort = s => { const i = s.lastIndexOf(':'); return [s.slice(0, i).replace(/^\[|\]$/g, ''), Number(s.slice(i + 1))] }
const sock = dgram.createSocket(args.bind && args.bind.startsWith('[') ? 'udp6' : 'udp4')
let remote = args.remote ? hostPort(args.remote) : null
let seq = 0

const out = obj => process.stdout.write(JSON.stringify(obj, (k, v) => typeof v === 'bigint' ? v.toString() : v) + '\n')

function build(name, fields, { signed = false, version = 2 } = {}) {
  const clazz = CLASSES[name]
  if (!clazz || !clazz.MSG_ID === undefined) throw new Error(`no message ${name}`)
  const msg = new clazz()
  Object.assign(msg, fields || {})
  seq = (seq + 1) & 0xff
  if (version === 1) return new MavLinkProtocolV1(sysid, compid).serialize(msg, seq)
  if (!signed) return new MavLinkProtocolV2(sysid, compid).serialize(msg, seq)
  const p = new MavLinkProtocolV2(sysid, compid, MavLinkProtocolV2.IFLAG_SIGNED)
  return p.sign(p.serialize(msg, seq), 1, signKey)
}

function send(buf) {
  if (!remote) return false
  sock.send(buf, remote[1], remote[0])
  return true
}

// parse splits one datagram into packets with node-mavlink's own splitter and parser.
function parse(buf) {
  return new Promise(resolve => {
    const packets = []
    const splitter = new MavLinkPacketSplitter({}, { onCrcError: () => packets.push({ crcError: true }) })
    const parser = new MavLinkPacketParser()
    splitter.pipe(parser)
    parser.on('data', p => packets.push(p))
    splitter.end(buf)
    parser.on('end', () => resolve(packets))
    parser.resume()
  })
}

function describe(p) {
  if (p.crcError) return { crcError: true }
  const clazz = REGISTRY[p.header.msgid]
  let fields = null
  try { if (clazz) fields = p.protocol.data(p.payload, clazz) } catch (e) { fields = null }
  return {
    msgid: p.header.msgid, name: clazz ? clazz.MSG_NAME : null, sysid: p.header.sysid, compid: p.header.compid,
    seq: p.header.seq, hex: p.buffer.toString('hex'), signed: p.signature !== null, fields,
  }
}

function autopilotAnswer(f) {
  if (f.name === 'COMMAND_LONG') {
    const ack = build('CommandAck', { command: f.fields.command, result: 0, targetSystem: f.sysid, targetComponent: f.compid })
    send(ack)
  } else if (f.name === 'PARAM_REQUEST_LIST') {
    for (let i = 0; i < paramCount; i++) {
      send(build('ParamValue', { paramId: `PARAM_${i}`, paramValue: i, paramType: 9, paramCount, paramIndex: i }))
    }
  } else if (f.name === 'PARAM_REQUEST_READ') {
    const i = f.fields.paramIndex >= 0 ? f.fields.paramIndex : 0
    send(build('ParamValue', { paramId: `PARAM_${i}`, paramValue: i, paramType: 9, paramCount, paramIndex: i }))
  }
}

sock.on('message', async (buf, rinfo) => {
  if (!args.remote) remote = [rinfo.address, rinfo.port]
  const frames = (await parse(buf)).map(describe)
  out({ dgram: buf.toString('hex'), frames, t: Date.now() - start })
  if (role === 'autopilot') for (const f of frames) if (!f.crcError && f.fields) autopilotAnswer(f)
})

async function stream(spec, seconds) {
  const counts = {}
  const timers = spec.map(s => {
    counts[s.send] = 0
    // Each frame of a stream differs (timeBootMs counts), so a duplicate is visible.
    return setInterval(() => {
      if (send(build(s.send, { ...s.fields, timeBootMs: counts[s.send] + 1 }))) counts[s.send]++
    }, 1000 / s.hz)
  })
  await new Promise(r => setTimeout(r, seconds * 1000))
  timers.forEach(clearInterval)
  out({ streamed: counts })
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', line => {
  if (!line.trim()) return
  const cmd = JSON.parse(line)
  if (cmd.quit) { sock.close(); process.exit(0) }
  if (cmd.raw) { const b = Buffer.from(cmd.raw, 'hex'); send(b); out({ sent: cmd.raw }) }
  if (cmd.send) { const b = build(cmd.send, cmd.fields, cmd); send(b); out({ sent: b.toString('hex') }) }
  if (cmd.stream) stream(cmd.stream, cmd.seconds ?? 1)
})
rl.on('close', () => { sock.close(); process.exit(0) })

const [bh, bp] = args.bind ? hostPort(args.bind) : ['127.0.0.1', 0]
sock.bind(bp, bh, () => { const a = sock.address(); out({ ready: `${a.address}:${a.port}` }) })
