"""The `cotgen` application: mounts one sub-app per area and turns user errors into one-line messages."""

from __future__ import annotations

import os
import signal
import sys

import duckdb
import typer
from rich.markup import escape
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from cotgen.commands import common, curate, generate, index, ingest, init, judge, models, report, review, run, train
from schemas.errors import CotgenError

_display_type = typer.core.TyperOption.display_type_rich


def _flag_without_type(self: typer.core.TyperOption, ctx: typer._click.Context) -> str | None:
    # typer shows `<bool>` beside every on/off flag in --help, which takes no value: show no type for flags.
    return None if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_without_type

app = typer.Typer(
    name="cotgen",
    help="Chain-of-thought training data for e-commerce search relevance (TaoSR1 / TaoSR-SHE recipe).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("init")(init.init)
app.command("ingest")(ingest.ingest_command)
app.command("status")(ingest.status_command)
app.command("report")(report.report_command)
app.command("run")(run.run_command)
app.add_typer(models.app, name="models")
# Each area's module owns its commands; these lines only mount them.
index.register(app)
generate.register(app)
judge.register(app)
curate.register(app)
review.register(app)
train.register(app)


def _offline_by_default() -> None:
    # Nothing may download weights at run time; without this a hub id would hang on DNS instead of failing.
    if os.environ.get("COTGEN_ONLINE") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _fail(message: str, code: int = 2) -> None:
    """One line on stderr, whatever the message holds (a library's multi-line text included), then exit."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    common.err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _os_message(e: OSError) -> str:
    where = f"{e.filename} -> {e.filename2}" if e.filename2 else e.filename
    return f"{where}: {e.strerror}" if where and e.strerror else str(e)


def main() -> None:
    _offline_by_default()
    # SIGTERM (a scheduler, `timeout`, `kill`) ends any command the way Ctrl-C does: what finished is kept.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        # Without standalone mode, Typer returns (not raises) a command's exit code, Ctrl-C included.
        code = app(standalone_mode=False)
    except CotgenError as e:
        _fail(str(e))
    except (KeyboardInterrupt, duckdb.InterruptException):
        # DuckDB turns a Ctrl-C during a statement into its own exception; its transaction rolls back.
        common.err_console.print("interrupted: what was finished is saved; run the same command again to continue")
        sys.exit(130)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except NoArgsIsHelpError as e:
        e.show()
        sys.exit(e.exit_code)
    except UsageError as e:  # a bad option or a missing argument (standalone_mode=False leaves them to us)
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        _fail(e.format_message() + hint, e.exit_code)
    except typer.TyperException as e:
        show = getattr(e, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(e, "exit_code", 2))
    # The last net, for the file system only: a refused write or read names its path instead of a traceback.
    # Programming errors (TypeError, KeyError, ...) still show theirs.
    except OSError as e:
        _fail(_os_message(e))
    except duckdb.IOException as e:
        _fail(str(e))
    except UnicodeDecodeError as e:
        _fail(f"a file is not UTF-8 ({e.reason} at byte {e.start}); save it as UTF-8")
    if isinstance(code, int) and code:
        if code == 130:
            common.err_console.print("interrupted: what was finished is saved; run the same command again to continue")
        sys.exit(code)


if __name__ == "__main__":
    main()
