#!/usr/bin/env python3
"""Modbus TCP power meters for dcwatt's modbus source tests (pymodbus 3.16.1).

Usage: modbus_meters.py PORT
Unit 1: Eastron SDM630-shaped input registers, float32 ABCD.
Unit 2: Schneider PM5xxx-shaped holding registers: total active power float32 kW at
        address 3059, active energy delivered INT64 Wh at address 3203 (MSW first).
Units 3, 4, 5: the SDM630 map packed CDAB, BADC and DCBA.
"""
import asyncio
import struct
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

SDM630 = {0: 230.1, 2: 231.2, 4: 229.8, 52: 12345.5, 72: 5678.25}
PM_POWER_KW = 42.5
PM_ENERGY_WH = 123_456_789_012


def words(fmt, value, order="ABCD"):
    raw = struct.pack(">" + fmt, value)
    ws = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        ws = ws[::-1]
    if order in ("BADC", "DCBA"):
        ws = [w[::-1] for w in ws]
    return [int.from_bytes(w, "big") for w in ws]


def block(base, size, entries):
    regs = [0] * size
    for addr, ws in entries:
        regs[addr - base:addr - base + len(ws)] = ws
    return SimData(address=base, values=regs, datatype=DataType.REGISTERS)


def bits():
    return [SimData(address=0, count=16, values=False, datatype=DataType.BITS)]


def unused():
    return [SimData(address=60000, count=1, values=0, datatype=DataType.REGISTERS)]


def sdm630(unit, order):
    inputs = block(0, 80, [(a, words("f", v, order)) for a, v in SDM630.items()])
    return SimDevice(id=unit, simdata=(bits(), bits(), unused(), [inputs]))


def pm5xxx(unit):
    holding = block(3050, 160, [(3059, words("f", PM_POWER_KW)), (3203, words("q", PM_ENERGY_WH))])
    return SimDevice(id=unit, simdata=(bits(), bits(), [holding], unused()))


async def main(port):
    devices = [sdm630(1, "ABCD"), pm5xxx(2), sdm630(3, "CDAB"), sdm630(4, "BADC"), sdm630(5, "DCBA")]
    server = ModbusTcpServer(devices, address=("127.0.0.1", port))
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
