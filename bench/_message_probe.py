"""One device message in a fresh process, as ``flwr-clientapp`` answers it, with its CPU split.

    python bench/_message_probe.py NODE_CONFIG_JSON KIND CONTENT_FILE [--split]

Loads what a ``flwr-clientapp`` process loads (Flower's ClientApp runner, then the fedgaze
ClientApp module), reads the message content the ServerApp sent (``CONTENT_FILE``: Flower's
RecordDict protobuf) as a ``KIND`` message (``train`` or ``evaluate``) and answers it through
``fedgaze.client.app.answer``:
through the warm trainer when the node config names one, else in this process. With ``--split``
(no trainer) the training stack and the device's rows are loaded first, each timed on its own.
Prints one JSON line: the process CPU seconds at each step (``time.process_time``, which
counts the interpreter's own start) and the reply's status. Flower's gRPC pull and push of the
message are not included (the same for both ways of answering).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

t_start = time.process_time()
import flwr.supernode.cli.flwr_clientapp  # noqa: E402,F401 - what the flwr-clientapp entry loads

t_flwr = time.process_time()
from flwr.app import Context, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from fedgaze.client.app import answer  # noqa: E402
from fedgaze.client.trainer_channel import decode_content  # noqa: E402
from fedgaze.defaults import HOLDOUT  # noqa: E402
from fedgaze.federation.protocol import parse_report  # noqa: E402
from fedgaze.federation.settings import NodeSettings  # noqa: E402

t_app = time.process_time()


def main() -> None:
    node_config, kind = json.loads(sys.argv[1]), sys.argv[2]
    body = Path(sys.argv[3]).read_bytes()
    steps: dict[str, float] = {"interpreter": t_start, "flwr": t_flwr, "app": t_app}
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    if "--split" in sys.argv[4:]:
        from fedgaze.client import rounds  # noqa: F401 - the training stack
        from fedgaze.client.local_rows import behaviour_rows

        steps["stack"] = time.process_time()
        behaviour_rows(NodeSettings.from_node_config(node_config), HOLDOUT)
        steps["rows"] = time.process_time()
    msg = Message(content=decode_content(body), dst_node_id=1, message_type=kind, group_id="1")
    context = Context(
        run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={}
    )
    report = parse_report(answer(msg, context))
    steps["answer"] = time.process_time()
    print(json.dumps({"steps": steps, "status": report.status.value}))


if __name__ == "__main__":
    main()
