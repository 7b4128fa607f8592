#!/usr/bin/env node
// Prints MAVLink frames built by node-mavlink, one per line as "name hex", for the Go
// parser's golden test (pkg/mavlink/testdata/node-frames.txt). Run from the repository
// root: node e2e/mavlinkpeer/frames.js > pkg/mavlink/testdata/node-frames.txt
const { MavLinkProtocolV1, MavLinkProtocolV2, minimal, common } = require('node-mavlink')

const v2 = new MavLinkProtocolV2(255, 190)
const v1 = new MavLinkProtocolV1(1, 1)
const out = []
const add = (name, buf) => out.push(`${name} ${buf.toString('hex')}`)

const hb = new minimal.Heartbeat()
hb.type = minimal.MavType.GCS
hb.autopilot = minimal.MavAutopilot.INVALID
hb.systemStatus = minimal.MavState.ACTIVE
hb.mavlinkVersion = 3
add('heartbeat-v2', v2.serialize(hb, 1))
add('heartbeat-v1', v1.serialize(hb, 2))

const arm = new common.CommandLong()
arm.targetSystem = 1
arm.targetComponent = 1
arm.command = common.MavCmd.COMPONENT_ARM_DISARM
arm._param1 = 1
add('command-long-arm-v2', v2.serialize(arm, 3))
const signer = new MavLinkProtocolV2(255, 190, MavLinkProtocolV2.IFLAG_SIGNED)
add('command-long-arm-v2-signed', signer.sign(signer.serialize(arm, 4), 7, Buffer.alloc(32, 0x42), 1700000000000))

const req = new common.CommandLong()
req.targetSystem = 1
req.targetComponent = 1
req.command = common.MavCmd.REQUEST_MESSAGE
req._param1 = 148
add('command-long-request-message-v2', v2.serialize(req, 5))

const list = new common.ParamRequestList()
list.targetSystem = 1
list.targetComponent = 1
add('param-request-list-v2', v2.serialize(list, 6))

const att = new common.Attitude()
att.timeBootMs = 123456
att.roll = 0.1
att.pitch = -0.2
att.yaw = 1.5
add('attitude-v2', v2.serialize(att, 7))
add('attitude-v1', v1.serialize(att, 8))

const mc = new common.ManualControl()
mc.target = 1
mc.x = 100
mc.z = 500
add('manual-control-v2', v2.serialize(mc, 9))

process.stdout.write(out.join('\n') + '\n')
