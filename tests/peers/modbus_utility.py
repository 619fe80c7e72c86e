#!/usr/bin/env python3
"""Modbus TCP utility meters for dcwatt's figures beyond PUE (pymodbus 3.16.1).

Usage: modbus_utility.py PORT
Unit 1: a water meter: a u32 millilitre totaliser in holding registers 0-1 (MSW first),
        counting 2 L a second from start-up, computed at each read.
Unit 2: a heat meter at the site boundary: reused heat, float32 kW in holding 0-1: 30 kW.
Unit 3: the utility incomer: float32 kW in holding 0-1: 150 kW.
Unit 4: the UPS output (IT at category 1): float32 kW in holding 0-1: 100 kW.
"""
import asyncio
import struct
import sys
import time

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

WATER_ML_PER_S = 2000
POWER_KW = {2: 30.0, 3: 150.0, 4: 100.0}
START = time.monotonic()


def f32(value):
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")]


def u32(value):
    value &= 0xFFFFFFFF
    return [value >> 16, value & 0xFFFF]


def bits():
    return [SimData(address=0, count=16, values=False, datatype=DataType.BITS)]


def unused():
    return [SimData(address=60000, count=1, values=0, datatype=DataType.REGISTERS)]


def holding(values):
    regs = values + [0] * (8 - len(values))
    return [SimData(address=0, values=regs, datatype=DataType.REGISTERS)]


async def totaliser(_fc, start_address, _address, _count, registers, set_values):
    """Puts the litres counted so far into the registers as they are read."""
    if set_values is None:
        ml = int((time.monotonic() - START) * WATER_ML_PER_S)
        registers[0 - start_address:2 - start_address] = u32(ml)
    return None


async def main(port):
    devices = [SimDevice(id=1, simdata=(bits(), bits(), holding(u32(0)), unused()), action=totaliser)]
    for unit, kw in POWER_KW.items():
        devices.append(SimDevice(id=unit, simdata=(bits(), bits(), holding(f32(kw)), unused())))
    server = ModbusTcpServer(devices, address=("127.0.0.1", port))
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
