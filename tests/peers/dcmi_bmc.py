#!/usr/bin/env python3
"""A BMC simulator that answers DCMI "Get Power Reading" over IPMI 2.0 (RMCP+), for
dcwatt's ipmi source tests: the real ipmitool talks to it exactly as to a server's BMC.

Usage: dcmi_bmc.py PORT WATTS [STATE_FILE]
With STATE_FILE, the reading is taken from that file (one integer) at each request.
Credentials: admin / password. Built on pyghmi's BMC framework.
"""
import struct
import sys
import time

import pyghmi.ipmi.bmc as bmc


class DcmiBmc(bmc.Bmc):
    def __init__(self, authdata, port, watts, state_file=None):
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.watts = watts
        self.state_file = state_file

    def current(self):
        if self.state_file:
            try:
                with open(self.state_file) as f:
                    return int(f.read().strip())
            except (OSError, ValueError):
                pass
        return self.watts

    def handle_raw_request(self, request, session):
        # NetFn 0x2C (group extension), command 0x02: DCMI Get Power Reading.
        if request["netfn"] == 0x2C and request["command"] == 0x02:
            w = self.current()
            # Group id 0xDC; current, minimum, maximum, average (u16 LE, W); IPMI timestamp
            # (u32 s); statistics period (u32 ms); state 0x40 = measurement active.
            payload = struct.pack("<HHHHII", w, max(w - 50, 0), w + 50, w, int(time.time()), 86_400_000)
            return session.send_ipmi_response(data=[0xDC] + list(payload) + [0x40])
        return super().handle_raw_request(request, session)


if __name__ == "__main__":
    port, watts = int(sys.argv[1]), int(sys.argv[2])
    state = sys.argv[3] if len(sys.argv) > 3 else None
    server = DcmiBmc({"admin": "password"}, port, watts, state)
    print("ready", flush=True)
    server.listen()
