#!/usr/bin/env python3
"""A DL/T 645-2007 meter bus behind a serial-to-Ethernet converter (transparent TCP),
for dcwatt's dlt645 source. Python standard library only.

Usage: dlt645_meters.py PORT

Written from the standard's frame definition, independently of the agent's code:
  request  [FE FE FE FE] 68 A0..A5 68 11 04 DI0..DI3 CS 16
  answer   FE FE FE FE 68 A0..A5 68 91 L DI0..DI3 VALUE CS 16
  error    FE FE FE FE 68 A0..A5 68 D1 01 ERR CS 16
Address bytes are BCD with the lowest byte first; every data byte carries +0x33; CS is
the sum modulo 256 of the bytes from the first 68 through the data; values are BCD,
lowest byte first; in power the top bit of the highest byte is the sign.

The bus, by nameplate address:
  123456789012  incomer: forward active energy 123456.78 kWh, active power 12.3456 kW;
                answers in two TCP segments with a pause between (a slow converter).
  000000005678  UPS output: 7654.32 kWh, 8.7654 kW; combined active energy -12.34 kWh
                (exported more than imported).
  000000000042  a meter whose power register reads 79.9999 kW (the format's largest)
                while its device is rated lower (the agent's max_power_w rejects it),
                and energy 0.01 kWh.
  000000000666  a damaged meter: its answers carry a wrong checksum.
Any other address stays silent, as a meter that is not on the bus. An identifier a meter
does not have gets the error answer with ERR = 0x02 (no such data).
"""
import socket
import sys
import threading
import time

FORWARD = (0x00, 0x00, 0x01, 0x00)  # DI0..DI3 of 00 01 00 00
COMBINED = (0x00, 0x00, 0x00, 0x00)
POWER = (0x00, 0x00, 0x03, 0x02)  # 02 03 00 00


def bcd(number, nbytes):
    """Unsigned integer to BCD, lowest byte first."""
    out = []
    for _ in range(nbytes):
        number, pair = divmod(number, 100)
        out.append((pair // 10) << 4 | (pair % 10))
    assert number == 0, "does not fit"
    return out


def signed_bcd(number, nbytes):
    raw = bcd(abs(number), nbytes)
    if number < 0:
        raw[-1] |= 0x80
    return raw


def address(nameplate):
    digits = nameplate.rjust(12, "0")
    pairs = [int(digits[i], 16) << 4 | int(digits[i + 1], 16) for i in range(0, 12, 2)]
    return bytes(reversed(pairs))


METERS = {
    address("123456789012"): {
        FORWARD: bcd(12345678, 4),
        POWER: signed_bcd(123456, 3),
        "split": True,
    },
    address("000000005678"): {
        FORWARD: bcd(765432, 4),
        COMBINED: signed_bcd(-1234, 4),
        POWER: signed_bcd(87654, 3),
    },
    address("000000000042"): {FORWARD: bcd(1, 4), POWER: signed_bcd(799999, 3)},
    address("000000000666"): {FORWARD: bcd(1, 4), POWER: bcd(1, 3), "damaged": True},
}


def frame(addr, control, data):
    body = bytes([0x68]) + addr + bytes([0x68, control, len(data)])
    body += bytes((b + 0x33) & 0xFF for b in data)
    cs = sum(body) & 0xFF
    return bytes([0xFE] * 4) + body + bytes([cs, 0x16])


def requests(buf):
    """Whole request frames in buf, and what is left."""
    out = []
    while True:
        start = buf.find(b"\x68")
        if start < 0:
            return out, b""
        buf = buf[start:]
        if len(buf) < 10:
            return out, buf
        length = buf[9]
        if len(buf) < 12 + length:
            return out, buf
        whole = buf[: 12 + length]
        buf = buf[12 + length :]
        if whole[7] != 0x68 or whole[-1] != 0x16 or sum(whole[:-2]) & 0xFF != whole[-2]:
            print("dlt645: a damaged request, ignored", whole.hex(), flush=True)
            continue
        out.append(whole)


def serve(conn):
    buf = b""
    with conn:
        while True:
            chunk = conn.recv(256)
            if not chunk:
                return
            found, buf = requests(buf + chunk)
            for req in found:
                addr, control = req[1:7], req[8]
                data = bytes((b - 0x33) & 0xFF for b in req[10:-2])
                meter = METERS.get(addr)
                if addr == b"\xaa" * 6 and len(METERS) == 1:
                    addr, meter = next(iter(METERS.items()))
                if meter is None or control != 0x11 or len(data) != 4:
                    continue  # not on the bus, or not a read: silence
                di = tuple(data)
                if di in meter:
                    answer = frame(addr, 0x91, list(di) + meter[di])
                else:
                    answer = frame(addr, 0xD1, [0x02])
                if meter.get("damaged"):
                    answer = answer[:-2] + bytes([(answer[-2] + 1) & 0xFF, 0x16])
                if meter.get("split"):
                    conn.sendall(answer[:7])
                    time.sleep(0.05)
                    conn.sendall(answer[7:])
                else:
                    conn.sendall(answer)


def main():
    port = int(sys.argv[1])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    print(f"dlt645: meters on 127.0.0.1:{port}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
