"""Flower's simulation engine alone: a ClientApp that replies at once, for the floor of a message.

    python bench/_engine_floor.py DEVICES CPUS

A Message-API ServerApp waits for ``DEVICES`` simulated nodes, then sends every node a train
message twice (two rounds), each carrying an ArrayRecord the size of the behaviour model; the
ClientApp replies with the same arrays and does nothing else. Prints one JSON line: each
round's wall seconds and the whole run's. Whatever ``fedgaze simulate`` spends beyond this per
message is fedgaze's (the device's handlers and the ServerApp's bookkeeping).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

DEVICES, CPUS = int(sys.argv[1]), int(sys.argv[2])
client = ClientApp()
server = ServerApp()
rounds: list[float] = []


@client.train()
def echo(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"arrays": msg.content.array_records["arrays"]}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    deadline = time.monotonic() + 600
    while len(nodes := sorted(grid.get_node_ids())) < DEVICES:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {DEVICES} nodes")
        time.sleep(0.1)
    arrays = ArrayRecord([np.zeros((83, 16), np.float32), np.zeros(16, np.float32)])
    for rnd in range(2):
        t0 = time.monotonic()
        content = RecordDict({"arrays": arrays, "config": ConfigRecord({"round": rnd})})
        sent = grid.push_messages(
            [Message(content, dst_node_id=n, message_type=MessageType.TRAIN) for n in nodes]
        )
        pending = set(sent)
        while pending and time.monotonic() < deadline:
            for reply in grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
            time.sleep(0.05)
        rounds.append(time.monotonic() - t0)


t_run = time.monotonic()
run_simulation(
    server,
    client,
    num_supernodes=DEVICES,
    backend_config={
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": CPUS,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
        },
    },
)
print(json.dumps({"rounds_s": rounds, "run_s": time.monotonic() - t_run}))
