"""``fedgaze demo`` and ``fedgaze train``: a real local federation, or central training.

Both share the federation options (:func:`_add_federation_args`, :func:`_federation_options`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.console import Console

from fedgaze import defaults
from fedgaze.argtypes import existing_dir, positive_float, positive_int
from fedgaze.labels.rows import LABEL_SOURCES
from fedgaze.model.kind import MODEL_KINDS, TEXT_LABELS, TextLabels

if TYPE_CHECKING:
    from fedgaze.local.demo import FederationOptions


def add_parsers(sub: Any) -> None:
    """Add ``demo`` and ``train`` to the ``fedgaze`` subparsers ``sub``."""
    demo = sub.add_parser("demo", help="run a real local federation end to end")
    demo.add_argument(
        "--nodes",
        type=positive_int,
        default=defaults.LOCAL_NODES,
        help=f"synthetic devices ({defaults.LOCAL_NODES})",
    )
    demo.add_argument("--data", type=existing_dir, help="IFLLM-format folder instead of synthetic")
    demo.add_argument("--run-dir", type=Path, help="run directory (default: new under ./runs/)")
    demo.add_argument(
        "--epsilon",
        type=positive_float,
        default=defaults.DEVICE_EPSILON,
        help=f"per-device budget ({defaults.DEVICE_EPSILON:g})",
    )
    demo.add_argument(
        "--labels",
        action="store_true",
        help="after the last round, collect every device's preference labels with label DP "
        "(randomized response), for `fedgaze alignment export`",
    )
    demo.add_argument(
        "--epsilon-label",
        type=positive_float,
        default=defaults.EPSILON_LABEL,
        help="with --labels: epsilon of each released label, flip probability 1/(1+e^E), "
        f"charged to the device budget ({defaults.EPSILON_LABEL:g})",
    )
    demo.add_argument(
        "--label-source",
        choices=LABEL_SOURCES,
        default=defaults.LABEL_SOURCE,
        help="with --labels: the person's explicit choice first, else the behaviour model's "
        f"inference; or the inference only ({defaults.LABEL_SOURCE})",
    )
    _add_federation_args(demo)
    demo.set_defaults(handler=_cmd_demo)

    train = sub.add_parser("train", help="train a reward model on an IFLLM-format folder")
    train.add_argument("--data", type=existing_dir, required=True)
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.add_argument("--mode", choices=("central", "federated"), default="central")
    train.add_argument(
        "--epsilon",
        type=positive_float,
        help="DP budget: central = target epsilon; federated = per-device budget "
        f"(default: non-private central, budget {defaults.DEVICE_EPSILON:g} federated)",
    )
    train.add_argument(
        "--epochs",
        type=positive_int,
        default=defaults.CENTRAL_EPOCHS,
        help=f"central epochs ({defaults.CENTRAL_EPOCHS})",
    )
    train.add_argument("--run-dir", type=Path, help="federated: run directory")
    train.add_argument(
        "--kind",
        choices=MODEL_KINDS,
        default="behaviour",
        help="behaviour: the pairwise model over gaze, mouse and text features (default); "
        "text: the text reward model r(prompt, response) over a frozen encoder",
    )
    train.add_argument(
        "--labels",
        choices=TEXT_LABELS,
        help="--kind text: learn from the person's explicit choices, the behaviour model's "
        "inference, or the explicit choice where given else the inference "
        f"({defaults.TEXT_LABELS})",
    )
    train.add_argument(
        "--behaviour-model",
        type=existing_dir,
        metavar="DIR",
        help="--kind text: behaviour model directory that infers the implicit labels (central "
        "default: one trained first on the same data; required for federated implicit/both)",
    )
    train.add_argument(
        "--encoder",
        metavar="SPEC",
        help=f"--kind text: frozen encoder, {defaults.TEXT_ENCODER!r} or "
        f"'sentence-transformers:PATH' ({defaults.TEXT_ENCODER})",
    )
    _add_federation_args(train)
    train.set_defaults(handler=_cmd_train)


def _add_federation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--insecure",
        action="store_true",
        help="turn OFF TLS and SuperNode authentication (debugging only; default: both on, "
        "with a fresh CA and device keys under RUN_DIR/certs)",
    )
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=defaults.ROUNDS,
        help=f"federated rounds ({defaults.ROUNDS})",
    )
    p.add_argument("--seed", type=int, default=defaults.SEED)
    p.add_argument("--workers", help="comma-separated IFLLM worker ids to run as devices")
    p.add_argument(
        "--max-workers",
        type=positive_int,
        default=defaults.LOCAL_MAX_WORKERS,
        help=f"cap on IFLLM devices ({defaults.LOCAL_MAX_WORKERS}); each is a SuperNode process",
    )
    p.add_argument("--delta", type=positive_float, default=defaults.DELTA)
    p.add_argument(
        "--noise-multiplier",
        type=positive_float,
        help="DP-SGD noise (default: the smallest that fits every round into the budget)",
    )
    p.add_argument(
        "--round-timeout",
        type=positive_float,
        default=defaults.LOCAL_ROUND_TIMEOUT,
        help=f"seconds ({defaults.LOCAL_ROUND_TIMEOUT:g})",
    )
    p.add_argument(
        "--max-device-epsilon",
        type=positive_float,
        help="server policy: do not aggregate an update whose signed record states a larger "
        "cumulative epsilon (default: no cap)",
    )
    p.add_argument(
        "--client-dp-epsilon",
        type=positive_float,
        help="also add client-level DP to the aggregate, calibrated to this epsilon per person "
        "over all rounds (default: off)",
    )
    p.add_argument(
        "--aggregation",
        choices=("fedavg", "trimmed-mean", "median"),
        default=defaults.AGGREGATION,
        help=f"how the server combines updates ({defaults.AGGREGATION}; the robust rules resist "
        "a few hostile devices, not combinable with client-level DP)",
    )
    p.add_argument(
        "--trim-fraction",
        type=float,
        default=defaults.TRIM_FRACTION,
        help=f"trimmed-mean: share cut from each end per coordinate ({defaults.TRIM_FRACTION:g})",
    )
    p.add_argument(
        "--max-update-norm",
        type=positive_float,
        help="refuse an update farther than this (L2) from the model sent (default: no bound)",
    )
    p.add_argument(
        "--secagg",
        action="store_true",
        help="secure aggregation (Flower's SecAgg+): the server learns only the sum of the "
        "devices' updates; needs more devices per round than the threshold",
    )
    p.add_argument(
        "--secagg-threshold",
        type=positive_int,
        help="with --secagg: devices needed to recover the sum, and the fewest that must "
        "collude with the server to learn more (default: a majority of a round's devices)",
    )
    p.add_argument(
        "--client-dp-clip",
        type=positive_float,
        default=defaults.CLIENT_DP_CLIP_NORM,
        help="client-level DP: L2 bound of each device's update "
        f"({defaults.CLIENT_DP_CLIP_NORM:g})",
    )


def _federation_options(args: argparse.Namespace, **overrides: Any) -> FederationOptions:
    from fedgaze.local.demo import FederationOptions

    workers = (
        tuple(w.strip() for w in args.workers.split(",") if w.strip()) if args.workers else None
    )
    fields: dict[str, Any] = {
        "rounds": args.rounds,
        "seed": args.seed,
        "workers": workers,
        "max_workers": None if workers else args.max_workers,
        "delta": args.delta,
        "noise_multiplier": args.noise_multiplier,
        "round_timeout": args.round_timeout,
        "max_device_epsilon": args.max_device_epsilon,
        "client_dp_epsilon": args.client_dp_epsilon,
        "client_dp_clip_norm": args.client_dp_clip,
        "aggregation": args.aggregation,
        "trim_fraction": args.trim_fraction,
        "max_update_norm": args.max_update_norm,
        "run_dir": args.run_dir,
        "insecure": args.insecure,
        "secagg": args.secagg,
        "secagg_threshold": args.secagg_threshold,
        **overrides,
    }
    return FederationOptions(**fields)


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from fedgaze.local.demo import run_local_federation

    opts = _federation_options(
        args,
        nodes=args.nodes,
        data=args.data,
        epsilon_budget=args.epsilon,
        epsilon_label=args.epsilon_label if args.labels else None,
        label_source=args.label_source,
    )
    return 0 if run_local_federation(opts, console).complete else 1


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    if args.kind == "text":
        return _train_text(args, console)
    text_only = [
        flag
        for flag, value in (
            ("--labels", args.labels),
            ("--behaviour-model", args.behaviour_model),
            ("--encoder", args.encoder),
        )
        if value is not None
    ]
    if text_only:
        raise ValueError(f"{', '.join(text_only)} only apply with --kind text")
    if args.mode == "central":
        from fedgaze.local.train_score import train_central_model

        saved = train_central_model(
            args.data,
            args.out,
            epsilon=args.epsilon,
            delta=args.delta,
            epochs=args.epochs,
            seed=args.seed,
        )
        eps = saved.provenance["epsilon"]
        console.print(
            f"trained on {saved.provenance['examples']} comparisons from "
            f"{saved.provenance['devices']} workers; "
            + ("non-private" if eps is None else f"epsilon={eps:.3f} delta={args.delta:g}")
            + f"; model written to {args.out}"
        )
        return 0
    from fedgaze.local.demo import run_local_federation

    budget = args.epsilon or defaults.DEVICE_EPSILON
    summary = run_local_federation(
        _federation_options(args, data=args.data, epsilon_budget=budget), console
    )
    if not summary.complete:
        return 1
    replace_model_dir(summary.model, args.out)
    console.print(f"federated model written to {args.out}")
    return 0


def _train_text(args: argparse.Namespace, console: Console) -> int:
    """``fedgaze train --kind text``: central (:mod:`fedgaze.local.train_text`) or federated."""
    labels = cast(TextLabels, args.labels or defaults.TEXT_LABELS)
    encoder = args.encoder or defaults.TEXT_ENCODER
    if args.mode == "central":
        from fedgaze.local.train_text import train_text_model

        saved = train_text_model(
            args.data,
            args.out,
            labels=labels,
            epsilon=args.epsilon,
            delta=args.delta,
            epochs=args.epochs,
            seed=args.seed,
            encoder_spec=encoder,
            behaviour_model=args.behaviour_model,
        )
        prov = saved.provenance
        sources = prov["label_sources"]
        behaviour = prov["behaviour_model"] or {}
        privacy = (
            "non-private"
            if prov["epsilon"] is None
            else f"epsilon={prov['epsilon']:.3f} delta={args.delta:g}"
        )
        if behaviour.get("source") == "trained here":
            privacy += "; implicit labels from a behaviour model trained first on the same data"
            if behaviour.get("epsilon") is not None:
                privacy += f" (epsilon={behaviour['epsilon']:.3f})"
        if prov["epsilon"] is not None and behaviour:
            total = prov["epsilon_total"]
            privacy += "; " + (
                f"epsilon_total={total:.3f} (basic composition)"
                if total is not None
                else "no end-to-end guarantee (the behaviour model states none)"
            )
        console.print(
            f"trained the text model on {prov['examples']} comparisons from "
            f"{prov['devices']} workers ({sources['explicit']} explicit, "
            f"{sources['implicit']} inferred labels); {privacy}; model written to {args.out}",
            soft_wrap=True,
            highlight=False,
        )
        return 0
    if labels != "explicit" and args.behaviour_model is None:
        raise ValueError(
            f"--kind text --mode federated --labels {labels} needs --behaviour-model DIR: the "
            "devices infer labels with it (train one with `fedgaze train --mode federated`), "
            "or use --labels explicit"
        )
    from fedgaze.local.demo import run_local_federation
    from fedgaze.text.model_dir import load_text_model, save_text_model

    budget = args.epsilon or defaults.DEVICE_EPSILON
    opts = _federation_options(
        args,
        data=args.data,
        epsilon_budget=budget,
        model_kind="text",
        text_labels=labels,
        encoder=encoder,
        behaviour_model=args.behaviour_model,
    )
    summary = run_local_federation(opts, console)
    if not summary.complete:
        return 1
    saved = load_text_model(summary.model)
    save_text_model(
        args.out,
        saved.state,
        encoder=saved.encoder,
        hidden=saved.hidden,
        provenance=saved.provenance,
    )
    console.print(f"federated text model written to {args.out}")
    return 0


def replace_model_dir(source: Path, out: Path) -> None:
    """Copy the model at ``source`` to ``out``, replacing only an earlier fedgaze model there."""
    if out.exists():
        if not (out / "model.json").is_file():
            raise ValueError(f"{out} exists and is not a fedgaze model directory; not replacing it")
        shutil.rmtree(out)
    shutil.copytree(source, out)
