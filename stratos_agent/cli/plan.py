"""`stratos plan`, `stratos catalog show|refresh`, `stratos bench-servers`: servers, pairs, Pareto plans."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stratos_agent.cli.app import app, console
from stratos_agent.errors import InputError

if TYPE_CHECKING:
    from stratos_agent.spec import DistillationSpec

SPEC_SUFFIXES = {".yaml", ".yml", ".json"}

catalog_app = typer.Typer(
    help="The catalog of cloud GPU offers the planner chooses from (dated, refreshable).",
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")


def load_spec(request: str) -> tuple[DistillationSpec, list[str]]:
    """A DistillationSpec from a YAML/JSON file or a natural-language request, with the parts of a request
    that were not understood ("'phrase': why" lines; none for a file)."""
    from stratos_agent.request_parser import understand_request
    from stratos_agent.spec import read_spec_file, validated_spec

    if _names_spec_file(request):
        path = Path(request)
        try:
            return validated_spec(read_spec_file(path), str(path)), []
        except UnicodeDecodeError as exc:  # read_spec_file's YAML errors are InputErrors already; these are not
            raise InputError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
        except RecursionError:
            raise InputError(f"{path}: nested too deeply to be a spec") from None
    return understand_request(request)


def _names_spec_file(request: str) -> bool:
    """A file when it exists, or looks like a spec path (one word ending .yaml/.yml/.json); a request otherwise.
    Text that cannot be a path (too long, NUL, several lines) is a request without asking the file system."""
    if "\n" in request or "\0" in request or len(request) > 1024:
        return False
    path = Path(request)
    try:
        if path.is_file():
            return True
    except OSError:  # e.g. a name component too long
        return False
    return path.suffix.lower() in SPEC_SUFFIXES and not any(ch.isspace() for ch in request)


def _pairs_table(plan):
    from rich.table import Table

    t = Table(
        title="Teacher x student pairs (score = E[acc] - 0.05 log10(1+$/1M serve) - 0.05 log10(1+$/1M "
        "teacher) + 0.02 logit-KD; tools/pairing.py)",
        title_justify="left",
    )
    for col in (
        "teacher",
        "student",
        "probe",
        "$/1k teach",
        "capacity",
        "same tok",
        "strategy",
        "exp acc",
        "p95 ms",
        "$/1M serve",
        "score",
    ):
        t.add_column(col, justify="right" if col not in {"teacher", "student", "strategy"} else "left")
    for p in plan.pairs:
        t.add_row(
            _short(p.teacher),
            f"{_short(p.student)} ({p.student_params / 1e6:.0f}M)",
            f"{p.probe_accuracy:.0%} {p.probe_source}",
            f"{p.teacher_usd_per_1k_tokens:.5f}",
            f"{p.capacity:.0%}",
            "yes" if p.tokenizer_match else "no",
            p.decision.strategy,
            f"{p.expected_accuracy:.1%}",
            "-" if p.serving_p95_ms is None else f"{p.serving_p95_ms:.0f}",
            "-" if p.serving_usd_per_1m_tokens is None else f"{p.serving_usd_per_1m_tokens:.3f}",
            f"{p.score:.3f}",
        )
    return t


def _short(model: str) -> str:
    return model.removeprefix("endpoint:").removeprefix("smollm2-")


def _front_table(plan, top: int):
    from rich.table import Table

    t = Table(
        title=f"Pareto front ({len(plan.front)} of {plan.candidates} candidate plans; "
        f"cheapest {top} + chosen)",
        title_justify="left",
    )
    for col in ("", "server", "student<-teacher", "strategy", "total $", "p95 ms", "exp acc", "train h"):
        t.add_column(
            col, justify="left" if col in {"", "server", "student<-teacher", "strategy"} else "right"
        )
    shown = plan.front[:top] + ([plan.chosen] if plan.chosen and plan.chosen not in plan.front[:top] else [])
    for p in shown:
        rank = "full" if p.lora_rank == 0 else f"r{p.lora_rank}"
        t.add_row(
            "[bold red]*[/]" if p == plan.chosen else "",
            f"{p.gpu}x{p.gpu_count} {p.server.split(':')[0]}",
            f"{_short(p.student)}<-{_short(p.teacher)}",
            f"{p.strategy} {rank} n={p.data_size}",
            f"{p.cost_usd:,.2f}",
            f"{p.p95_ms:,.0f}{'' if p.latency_source == 'modelled' else ' (meas.)'}",
            f"{p.accuracy:.1%}",
            f"{p.train_hours:.2g}",
        )
    return t


@app.command(
    epilog=(
        "Examples:\n\n"
        "    stratos plan spec.yaml\n\n"
        '    stratos plan "a model that lists Mahjong winning tiles, under $500, p95 under 300 ms" '
        "--out runs/plan\n\n"
        "    stratos plan spec.json --gpu L4 --gpu H100 --probe"
    )
)
def plan(
    request: Annotated[
        str,
        typer.Argument(
            help="A spec file (YAML/JSON with DistillationSpec fields) or a plain-English request."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for plan.json and pareto.png [default: plan-YYYYmmdd-HHMMSS in the runs dir]."
        ),
    ] = None,
    gpu: Annotated[
        list[str] | None,
        typer.Option(
            help="Only these GPUs (repeatable): T4, L4, A10G, L40S, A100-80GB, H100, ..., CPU = this machine."
        ),
    ] = None,
    probe: Annotated[
        bool,
        typer.Option(
            help="Measure each teacher's probe accuracy on the task first "
            "(forward synthesis, cached); default uses a documented prior."
        ),
    ] = False,
    probe_n: Annotated[int, typer.Option(help="Items per probe.", min=1)] = 16,
    local: Annotated[bool, typer.Option(help="Include this machine as a (free, slow) server.")] = True,
    top: Annotated[int, typer.Option(help="Front rows to print.", min=1)] = 15,
) -> None:
    """Choose server, teacher/student pair and strategy as a **Pareto-optimal plan**.

    Objectives: total cost (training + serving for the spec's traffic and duration + teacher data), p95
    latency, expected accuracy, training hours; constraints from the spec. Prints the pair table, the
    front and the chosen plan with a paragraph on what it traded; saves plan.json and pareto.png.
    An impossible spec exits with the binding constraint and the nearest feasible plans.
    """
    import json
    from datetime import datetime

    from rich.markup import escape

    from stratos_agent.files import write_text_atomic
    from stratos_agent.settings import get_settings
    from stratos_agent.tools.planning import plan_for, save_front_png

    spec, unparsed = load_spec(request)
    for note in unparsed:
        console.print(f"[yellow]not understood:[/] {escape(note)}", highlight=False)
    with console.status("planning: catalog, roofline, pairs, Pareto front ..."):
        result = plan_for(spec, gpus=gpu, run_probe=probe, probe_n=probe_n, include_local=local)
    out = out or get_settings().runs_dir / f"plan-{datetime.now():%Y%m%d-%H%M%S}"
    # The plan, plus the spec it answered and what of the request was not understood, so that a reader
    # sees how the request was read (extra keys: the file still loads as a Plan).
    record = {**result.model_dump(mode="json"), "spec": spec.model_dump(mode="json"), "unparsed": unparsed}
    write_text_atomic(out / "plan.json", json.dumps(record, indent=1, ensure_ascii=False))
    console.print(
        f"catalog of {result.catalog_date} ({result.catalog_age_days} days old); "
        f"{result.candidates} candidate plans; excluded: "
        + (", ".join(f"{n} {r}" for r, n in result.excluded.items()) or "none")
    )
    console.print(_pairs_table(result))
    for p in result.pairs:
        console.print(f"  {_short(p.teacher)} -> {_short(p.student)}: {p.decision.reason}")
    if not result.feasible:
        for hint in result.nearest_feasible:
            console.print(f"  - {hint}")
        raise InputError(
            f"no plan meets the spec; binding: {', '.join(result.binding_constraints) or 'jointly'} "
            f"(details above; plan.json in {out})"
        )
    console.print(_front_table(result, top))
    save_front_png(result, out / "pareto.png")
    console.print(f"[bold]why:[/] {result.why}")
    console.print(f"saved {out / 'plan.json'} and {out / 'pareto.png'}")


@catalog_app.command("show")
def catalog_show(
    gpu: Annotated[list[str] | None, typer.Option(help="Only these GPUs (repeatable).")] = None,
    provider: Annotated[list[str] | None, typer.Option(help="Only these providers (repeatable).")] = None,
) -> None:
    """Show the server catalog (snapshot or refreshed), its date and age, one row per offer."""
    from rich.table import Table

    from stratos_agent.catalog import canonical_gpu, load_catalog

    cat = load_catalog()
    wanted = {canonical_gpu(g) for g in gpu} if gpu else None
    providers = {p.lower() for p in provider} if provider else None
    t = Table(
        title=f"{cat.kind} of {cat.date} ({cat.age_days} days old) from {cat.origin}", title_justify="left"
    )
    for col in (
        "provider",
        "instance",
        "GPU",
        "n",
        "GB/GPU",
        "region",
        "$/h",
        "spot $/h",
        "GB/s",
        "bf16 TF",
        "interconnect",
        "date",
    ):
        t.add_column(col)
    for o in sorted(cat.offers, key=lambda o: (o.gpu, o.on_demand_usd_h)):
        if (wanted and o.gpu not in wanted) or (providers and o.provider not in providers):
            continue
        t.add_row(
            o.provider,
            o.instance_type,
            o.gpu,
            str(o.gpu_count),
            f"{o.gpu_memory_gb:g}",
            o.region,
            f"{o.on_demand_usd_h:.3f}",
            "-" if o.spot_usd_h is None else f"{o.spot_usd_h:.3f}",
            f"{o.mem_bw_gbps:g}",
            f"{o.bf16_tflops:g}",
            o.interconnect,
            o.date,
        )
    console.print(t)
    for prov, src in sorted({(o.provider, o.source) for o in cat.offers}):
        console.print(f"  source {prov}: {src}")
    console.print(
        f"{len(cat.offers)} offers, {len({o.provider for o in cat.offers})} providers, "
        f"{len(cat.gpus())} GPU types. Prices age: `stratos catalog refresh` rebuilds from SkyPilot."
    )


@catalog_app.command("refresh")
def catalog_refresh(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for SkyPilot's catalog download.")] = 120.0,
) -> None:
    """Rebuild the catalog from SkyPilot's public catalog (needs network and `make cloud`).

    Offline, nothing changes: the current catalog is used and its age is shown.
    """
    from stratos_agent.catalog import refresh_catalog

    with console.status("fetching SkyPilot's catalog through .venv-cloud ..."):
        result = refresh_catalog(timeout_s=timeout)
    console.print(("[green]refreshed:[/] " if result.refreshed else "[yellow]offline:[/] ") + result.message)


@app.command(
    "bench-servers",
    epilog=(
        "Examples:\n\n"
        "    stratos bench-servers\n\n"
        "    stratos bench-servers smollm2-135m --requests 16 --force\n\n"
        "    stratos bench-servers smollm2-135m --url http://127.0.0.1:8000/v1 --served-name smollm2"
    ),
)
def bench_servers(
    models: Annotated[
        list[str] | None, typer.Argument(help="Models to time [default: smollm2-135m, smollm2-135m-half].")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible (vLLM) base URL to time instead of in-process transformers."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Key for --url [default: OPENAI_API_KEY]; prefer that variable or --api-key-file "
                     "(a flag's value is visible in `ps`).", show_default=False),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File holding the key for --url, instead of --api-key.", show_default=False)
    ] = None,
    served_name: Annotated[
        str | None, typer.Option(help="Model name at --url [default: the model id].")
    ] = None,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length of every request.")] = 64,
    output_tokens: Annotated[int, typer.Option(help="Answer length of every request.")] = 16,
    requests: Annotated[int, typer.Option(help="Requests timed for p50/p95 latency.")] = 5,
    threads: Annotated[
        int | None, typer.Option(help="torch threads [default: STRATOS_THREADS or torch's].")
    ] = None,
    force: Annotated[bool, typer.Option(help="Measure again even if today's result is cached.")] = False,
) -> None:
    """Measure prefill and decode (batch 1/4/8) tokens/s, TTFT and p50/p95 latency on this hardware.

    Tens of seconds for the 135M model on 2 idle cores (far longer on a busy machine). Results are
    cached per hardware fingerprint + model + request shape + date and calibrate the roofline model the
    planner uses for this machine; the table then shows what the roofline predicts for the catalog's
    GPUs (labelled modelled).
    """
    from rich.table import Table

    from stratos_agent.catalog import load_catalog
    from stratos_agent.tools import roofline, server_bench

    models = models or ["smollm2-135m", "smollm2-135m-half"]
    results = []
    for model in models:
        with console.status(f"{model}: ...") as status:
            results.append(
                server_bench.bench_model(
                    model,
                    url=url,
                    api_key=api_key,
                    api_key_file=api_key_file,
                    served_name=served_name,
                    prompt_tokens=prompt_tokens,
                    output_tokens=output_tokens,
                    requests=requests,
                    threads=threads,
                    force=force,
                    progress=lambda msg, m=model: status.update(f"{m}: {msg}"),
                )
            )
    t = Table(
        title=f"measured on {results[0].fingerprint.cpu_model} ({results[0].fingerprint.threads} threads, "
        f"torch {results[0].fingerprint.torch_version})",
        title_justify="left",
    )
    for col in (
        "model",
        "backend",
        "prefill tok/s",
        *(f"decode b{b} tok/s" for b in server_bench.DEFAULT_BATCHES),
        "TTFT ms",
        "p50 ms",
        "p95 ms",
        "took s",
    ):
        t.add_column(col)
    for r in results:
        t.add_row(
            r.model,
            r.backend,
            f"{r.prefill_tok_s:.0f}",
            *(f"{r.decode_tok_s.get(b, float('nan')):.1f}" for b in server_bench.DEFAULT_BATCHES),
            f"{r.ttft_ms:.0f}",
            f"{r.p50_ms:.0f}",
            f"{r.p95_ms:.0f}",
            f"{r.seconds:.0f}",
        )
    console.print(t)
    if url or results[0].peak_mem_bw_gbps is None:
        return
    eff = roofline.calibrate(results, results[0].peak_mem_bw_gbps, results[0].peak_tflops)
    console.print(
        f"this machine: measured peaks {results[0].peak_mem_bw_gbps:.1f} GB/s, "
        f"{results[0].peak_tflops * 1e3:.0f} GFLOP/s; calibrated e_bw={eff.bw:.2f} e_f={eff.flops:.2f} "
        f"per-layer overhead {eff.layer_overhead_s * 1e3:.2f} ms, "
        f"batched weight reads x{eff.batched_read:.2f}, "
        f"tail p95/p50 {eff.tail:.2f}"
    )
    first = results[0]
    g = Table(
        title=f"modelled (roofline, {roofline.GPU_DEFAULT.source}) for {first.model} in bf16 on catalog GPUs",
        title_justify="left",
    )
    for col in ("GPU", "decode b1 tok/s", "decode b8 tok/s", "prefill tok/s", "p95 ms"):
        g.add_column(col)
    seen = set()
    for offer in sorted(load_catalog().offers, key=lambda o: o.mem_bw_gbps):
        if offer.gpu in seen:
            continue
        seen.add(offer.gpu)
        fig = roofline.serving_figures(
            first.params * 2,
            first.kv_bytes_per_token / 2,
            first.params,
            first.layers,
            offer.mem_bw_gbps,
            offer.bf16_tflops,
            roofline.GPU_DEFAULT,
            prompt_tokens,
            output_tokens,
            1,
        )
        g.add_row(
            offer.gpu,
            f"{float(fig.decode_tok_s[1]):.0f}",
            f"{float(fig.decode_tok_s[8]):.0f}",
            f"{float(fig.prefill_tok_s):.0f}",
            f"{float(fig.p95_s) * 1e3:.0f}",
        )
    console.print(g)
