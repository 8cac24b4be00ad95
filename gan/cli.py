"""Command-line plumbing shared by the `jobs/` scripts.

Common flags (`--data`, `--data-format`, `--preset`, `--out`, ...) plus any
number of dotted config overrides (`--optim.lr_g 1e-4`, `--aug.mirror=false`),
and `main()` wrapping that turns a `UserError` into one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from gan.config import Config, make_config
from gan.errors import EXIT_DISK_FULL, EXIT_INTERRUPTED, EXIT_USAGE, DiskFull, UserError, is_disk_full
from gan.fastpath import reexec_with_allocator
from gan.quiet import quiet_tensorflow


def add_common_flags(parser: argparse.ArgumentParser, presets=None, default_preset: str = "paper") -> None:
    """The flags every training job shares; `presets` the job's registry (default: the trainer's)."""
    from gan.config import PRESETS
    g = parser.add_argument_group("data and output")
    g.add_argument("--data", default=None, help="'synthetic' (default) or a dataset folder")
    g.add_argument("--data-format", default=None,
                   help="auto (default), synthetic, pix2pix, cityscapes or paired-folders")
    g.add_argument("--preset", default=default_preset,
                   help=f"{', '.join(presets or PRESETS)} (default: {default_preset})")
    g.add_argument("--out", default="runs", help="root of the run directories (default: runs)")
    g.add_argument("--experiment", default=None, help="experiment folder under --out (default: 'default')")
    parser.epilog = (parser.epilog or "") + (
        "Any config field can be set by its dotted name, e.g. --optim.lr_g 1e-4 --aug.mirror false "
        "--train.steps 2000 (see gan/config.py).")


def add_gens_flag(parser: argparse.ArgumentParser, default: str = "all") -> None:
    """--gens: the one spelling of "which generators" in every job (--gen is an old alias)."""
    from gan.models import generator, names
    summaries = "; ".join(f"{g}: {generator(g).summary}" if generator(g).summary else g for g in names())
    parser.add_argument("--gens", default=default, help=f"a comma list of generators, or all (default: {default}). "
                                                        f"Registered: {summaries}")
    parser.add_argument("--gen", dest="gens", help=argparse.SUPPRESS)


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """--config FILE: an experiment file (jobs/configs/) whose values are the command's defaults."""
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="an experiment file (e.g. jobs/configs/study.py): a Python file whose get_config() "
                        "returns the command's flags by name and config fields by dotted name; flags given on the "
                        "command line win")


def read_config_file(path: str) -> dict[str, Any]:
    """get_config() of an experiment file: {flag name or dotted field: value} (UserError naming the file)."""
    import importlib.util
    if not os.path.isfile(path):
        raise UserError(f"--config {path}: no such file" if not os.path.exists(path) else f"--config {path}: not a file")
    if not path.endswith(".py"):
        raise UserError(f"--config {path}: an experiment file is a Python file (.py) whose get_config() returns the "
                        "flags (see jobs/configs/)")
    spec = importlib.util.spec_from_file_location("pix2pix_experiment", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        values = module.get_config()
    except (Exception, SystemExit) as e:  # a broken experiment file is one line naming it, whatever it raised
        message = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"--config {path}: cannot be read ({type(e).__name__}: {message})") from None
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise UserError(f"--config {path}: get_config() must return a dict of flag or dotted field -> value")
    return values


def _as_flag_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _flag_value(path: str, key: str, action: argparse.Action, value: Any) -> Any:
    """An experiment file's value for a flag, of the type the flag takes (argparse checks only what is typed)."""
    def refuse(what: str):
        raise UserError(f"--config {path}: {key} takes {what}, got {value!r}")
    if isinstance(action, argparse._AppendAction):
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            refuse("a list of strings (it is repeatable)")
        return list(value)
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            refuse("true or false")
    elif action.type is int:
        if not isinstance(value, int) or isinstance(value, bool):
            refuse("a whole number")
    elif action.type is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            refuse("a number")
    elif not isinstance(value, str):
        refuse("a string")
    if action.choices is not None and value not in action.choices:
        refuse(f"one of {', '.join(map(str, action.choices))}")
    return value


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None
                      ) -> tuple[argparse.Namespace, list[str]]:
    """parse_known_args with --config: the file's flags become the parser's defaults and its dotted fields come
    before the command line's, so anything typed wins. A key that is neither a flag of this command nor a
    dotted field is refused, naming it."""
    argv = sys.argv[1:] if argv is None else argv
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config", default=None)
    given, _ = first.parse_known_args(argv)
    if given.config is None:
        args, extra = parser.parse_known_args(argv)
        args.from_config = {}
        return args, extra
    values = read_config_file(given.config)
    flags = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    defaults, fields = {}, []
    for key, value in values.items():
        if "." in key:
            fields += [f"--{key}", _as_flag_value(value)]
        elif key in flags:
            defaults[key] = _flag_value(given.config, key, flags[key], value)
        else:
            raise UserError(f"--config {given.config}: {key!r} is not a flag of this command (choose from "
                            f"{', '.join(sorted(flags))}, or a dotted config field)")
    parser.set_defaults(**defaults)
    args, extra = parser.parse_known_args(argv)
    args.from_config = defaults  # what the file set (a --resume may carry the file that started it)
    return args, fields + extra


def generator_list(text: str) -> list[str]:
    """'all' -> every registered generator; 'unet,hybrid' -> those, each checked (UserError naming --gens)."""
    from gan.models import names
    gens = list(names()) if text == "all" else [g for g in text.split(",") if g]
    bad = [g for g in gens if g not in names()]
    if bad or not gens:
        raise UserError(f"--gens: unknown generator {bad[0] if bad else text!r} "
                        f"(choose from {', '.join(names())}, or all)")
    return gens


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """['--optim.lr_g', '1e-4', '--aug.mirror=false'] -> {'optim.lr_g': '1e-4', 'aug.mirror': 'false'}."""
    overrides, i = {}, 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or "." not in token.split("=")[0]:
            raise UserError(f"{token}: unknown argument (config fields are dotted, e.g. --train.steps 100)")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise UserError(f"{token}: needs a value")
            key, value = token[2:], extra[i + 1]
            i += 2
        overrides[key] = value
    return overrides


def overrides_from_flags(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """The dotted overrides a command's flags ask for: --data and --data-format as the fields they set, then
    the dotted flags (the one place a flag becomes a field)."""
    overrides = {}
    if args.data is not None:
        overrides["data.source"] = args.data
    if args.data_format is not None:
        overrides["data.format"] = args.data_format
    overrides.update(parse_overrides(extra))
    return overrides


def config_from_args(args: argparse.Namespace, extra: list[str], make=make_config, **fixed) -> Config:
    """Preset, then the common flags, then dotted overrides, then `fixed` (e.g. the generator); `make`
    the job's config maker (make_config, make_segmenter_config)."""
    overrides = {"experiment": args.experiment} if args.experiment is not None else {}
    overrides.update(overrides_from_flags(args, extra))
    overrides.update(fixed)
    return make(args.preset, overrides)


def refuse_other_generators_settings(overrides: dict[str, Any], gens: list[str]) -> None:
    """`--gens unet --model.resnet.blocks -5`: a setting of a generator the command does not train would be
    recorded unchecked; refused, naming it."""
    from gan.models import names
    for key in overrides:
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "model" and parts[1] in names() and parts[1] not in gens:
            raise UserError(f"--{key}: {parts[1]} is not among --gens {','.join(gens)}; drop the flag or train "
                            f"{parts[1]} too")


class ClosedPipeTolerant:
    """stdout that outlives its reader (`jobs/train.py ... | head -1`): once the pipe is closed, the rest goes
    to /dev/null and the job carries on, rather than failing a run for want of a reader."""

    def __init__(self, stream):
        self._stream = stream

    def _closed(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the original stream's own flush at exit writes there too
        os.close(devnull)
        self._stream = open(os.devnull, "w")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def interrupt_on_term() -> None:
    """SIGTERM (scancel, kill) ends this command as Ctrl-C does: one line, exit 130, nothing half-written.
    SIGINT too, also when the command was started with it ignored (`cmd &` from a script: an ignored signal
    stays ignored across exec, and Python then installs no Ctrl-C handler), as the trainers do."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"{signal.Signals(signum).name}")
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_main(main: Callable[[], int]) -> None:
    """Run a command: UserError -> 'error: ...' on stderr, exit 2; else exit with main's code."""
    quiet_tensorflow()  # TensorFlow's C++ start-up lines stay out of the output (PIX2PIX_TF_LOGS=1 shows them)
    if not isinstance(sys.stdout, ClosedPipeTolerant):
        sys.stdout = ClosedPipeTolerant(sys.stdout)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # OpenCV's own lines would precede our error line
    reexec_with_allocator()  # before TensorFlow loads: the fast path (gan/fastpath.py)
    try:
        code = main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except DiskFull as e:
        print(f"error: disk full: {e}", file=sys.stderr)
        sys.exit(EXIT_DISK_FULL)
    except OSError as e:  # a write the filesystem refused where no job handled it (read-only, permission)
        if is_disk_full(e):
            print(f"error: disk full: no space left on device writing {e.filename or 'a file'}", file=sys.stderr)
        else:
            print(f"error: {e.filename or 'a file'}: {e.strerror or e}", file=sys.stderr)
        sys.exit(EXIT_DISK_FULL)
    except KeyboardInterrupt as e:
        print("interrupted" + (f": {e}" if str(e) else ""), file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)
