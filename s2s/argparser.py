"""ArgumentParser: dataclasses <-> command line, JSON and YAML, with the semantics of `HfArgumentParser`.

    parser = ArgumentParser((ModelArguments, DataArguments, Seq2SeqTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()

accepts `--learning_rate 3e-4 --fp16 --no_remove_unused_columns`, or a config file as the only positional
argument, with command-line overrides after it: `python -m recipes.translation config.yaml --seed 1`.

Field types map to argparse as follows: `bool` -> `--x` or `--x true/false/yes/no/1/0` (and `--no_x` when
the default is True); `Literal[...]` and `Enum` -> a fixed set of choices; `bool | Literal["auto"]` -> a
boolean or that word; `list[T]` -> one or more values; `dict` -> a JSON object string; `X | None` -> X, or
`none`/`null` for None (so the command line can unset what a config file set; not for strings, where
"none" may be a value). The help of each option is the docstring written under the field (or
`metadata["help"]`).

A dataclass may also declare `refused_arguments`, a table of argument names it recognises but cannot honour
(`TrainingArguments` declares Hugging Face's `--push_to_hub`, `--deepspeed`, ...). Those are parsed too, from
the command line and from config files, and handed to the dataclass, whose constructor refuses them with the
reason and the alternative; `--help` lists them at the end instead of calling them unknown.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import enum
import inspect
import json
import os
import sys
import textwrap
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from s2s.arguments.refused import refused_help

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


def string_to_bool(value: str | bool) -> bool:
    """'true'/'yes'/'1'/... -> True, 'false'/'no'/'0'/... -> False (any case); anything else is an error."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0), got {value!r}")


def field_docs(dtype: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and of its dataclass bases), read from the source.

    Falls back to nothing for classes whose source is unavailable; the parser then uses `metadata["help"]`."""
    docs: dict[str, str] = {}
    for cls in reversed(dtype.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        class_def = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
        if class_def is None:
            continue
        body = class_def.body
        for stmt, after in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


class _Kind:
    """How one field's type maps to argparse: the scalar conversion, whether it is a list, the choices."""

    def __init__(self, hint: Any) -> None:
        self.optional = False
        self.is_list = False
        self.is_bool = False
        self.choices: list[Any] | None = None
        self.convert: Any = str
        members = [hint]
        if _is_union(hint):
            members = [m for m in typing.get_args(hint) if m is not type(None)]
            self.optional = len(members) < len(typing.get_args(hint))
        lists = [m for m in members if typing.get_origin(m) in (list, tuple, Sequence) or m in (list, tuple)]
        if lists:
            self.is_list = True
            args = typing.get_args(lists[0])
            members = [args[0] if args else str]
        enums = [m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)]
        literals = [m for m in members if typing.get_origin(m) is Literal]
        dicts = [m for m in members if m is dict or typing.get_origin(m) is dict]
        if literals and bool in members:  # e.g. bf16: bool | Literal["auto"]
            self.is_bool = True
            self.choices = [True, False, *typing.get_args(literals[0])]
            self.convert = _bool_or_literal_converter(list(typing.get_args(literals[0])))
        elif enums:
            cls = enums[0]
            self.choices = [m.value for m in cls]
            self.convert = _enum_converter(cls)
        elif literals:
            self.choices = list(typing.get_args(literals[0]))
            self.convert = _literal_converter(self.choices)
        elif dicts:
            self.convert = _json_converter(allow_str=str in members)
        elif str in members:
            self.convert = str
        elif bool in members:
            self.is_bool = True
            self.convert = string_to_bool
        elif members and isinstance(members[0], type):  # int, float, Path, ...
            self.convert = members[0]
        if self.optional and self.convert is not str and "none" not in (self.choices or ()):
            self.convert = _or_none(self.convert)

    def coerce(self, name: str, value: Any) -> Any:
        """Convert a value read from JSON/YAML where the file format is looser than the type: YAML reads
        `1e-3` as a string, and `"true"` may be quoted."""
        if value is None or self.convert is str:
            return value
        if self.is_list:
            items = value if isinstance(value, list | tuple) else [value]
            return [self._coerce_scalar(name, v) for v in items]
        return self._coerce_scalar(name, value)

    def _coerce_scalar(self, name: str, value: Any) -> Any:
        # only plain strings from a file are converted; values the command line already converted, and this
        # package's own str subclasses (enum members, alias echoes), are left alone
        if type(value) is str:
            try:
                return self.convert(value)
            except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
                raise ValueError(f"{name}: {err}") from None
        if self.convert is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _enum_converter(cls: type[enum.Enum]) -> Any:
    def convert(value: str) -> enum.Enum:
        try:
            return cls(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {[m.value for m in cls]}") from None

    convert.__name__ = cls.__name__
    return convert


def _literal_converter(choices: list[Any]) -> Any:
    by_text = {str(c): c for c in choices}

    def convert(value: str) -> Any:
        if value not in by_text:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {choices}")
        return by_text[value]

    convert.__name__ = "choice"
    return convert


def _or_none(convert: Any) -> Any:
    """``none``/``null`` stand for None, so the command line can unset what a config file set."""

    def or_none(value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("none", "null"):
            return None
        return convert(value)

    or_none.__name__ = getattr(convert, "__name__", "value")
    return or_none


def _bool_or_literal_converter(words: list[str]) -> Any:
    """A boolean, or one of a few words that stand for a value decided later (``"auto"``)."""

    def convert(value: str | bool) -> Any:
        if isinstance(value, str) and value.strip().lower() in words:
            return value.strip().lower()
        try:
            return string_to_bool(value)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected true, false or one of {words}, got {value!r}"
            ) from None

    convert.__name__ = "choice"
    return convert


def _json_converter(*, allow_str: bool) -> Any:
    def convert(value: str) -> Any:
        if isinstance(value, dict):
            return value
        if not value.lstrip().startswith("{") and allow_str:
            return value  # e.g. a path to a JSON file
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"not a JSON object ({err}): {value!r}") from None
        if not isinstance(parsed, dict):
            raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"key\": 1}}', got {value!r}")
        return parsed

    convert.__name__ = "JSON"
    return convert


def _unknown_keys_message(unknown: Iterable[str], known: Iterable[str], *, source: str) -> str:
    known = sorted(known)
    parts = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, known, n=3)
        parts.append(f"{key!r}" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
    return f"unknown argument(s) in {source}: {'; '.join(parts)}"


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` built from one or several dataclasses (see the module docstring).

    Option abbreviations are off (`--learn` does not silently mean `--learning_rate`)."""

    def __init__(self, dataclass_types: type | Iterable[type] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("usage", "%(prog)s [CONFIG.yaml|CONFIG.json] [--option VALUE ...]")
        super().__init__(**kwargs)
        if dataclass_types is None:  # options come from add_argument alone, as Hugging Face allows
            dataclass_types = []
        elif dataclasses.is_dataclass(dataclass_types):
            dataclass_types = [dataclass_types]
        self.dataclass_types: list[type] = list(dataclass_types)
        self._kinds: dict[type, dict[str, _Kind]] = {}
        # refused argument name -> (the dataclass whose table refuses it, its entry in that table)
        self._refused: dict[str, tuple[type, Any]] = {}
        for dtype in self.dataclass_types:
            if not (isinstance(dtype, type) and dataclasses.is_dataclass(dtype)):
                raise TypeError(f"ArgumentParser takes dataclass types, got {dtype!r}")
            self._add_dataclass_arguments(dtype)
        for dtype in self.dataclass_types:
            self._add_refused_arguments(dtype)
        if self._refused:
            table = {name: refused for name, (_, refused) in self._refused.items()}
            self.epilog = "\n\n".join(part for part in (self.epilog, refused_help(table)) if part)

    # ------------------------------------------------------------------------------------ building
    def _add_dataclass_arguments(self, dtype: type) -> None:
        try:
            hints = typing.get_type_hints(dtype)
        except NameError as err:
            raise TypeError(f"cannot resolve the type hints of {dtype.__name__}: {err}") from err
        docs = field_docs(dtype)
        summary = (inspect.getdoc(dtype) or "").split("\n\n")[0]
        if summary.startswith(f"{dtype.__name__}("):  # the signature dataclasses writes for undocumented ones
            summary = ""
        group = self.add_argument_group(dtype.__name__, " ".join(summary.split()) or None)
        kinds = self._kinds[dtype] = {}
        for f in dataclasses.fields(dtype):
            if not f.init:
                continue
            kind = kinds[f.name] = _Kind(hints[f.name])
            self._add_field(group, f, kind, docs.get(f.name) or f.metadata.get("help", ""))

    def _add_refused_arguments(self, dtype: type) -> None:
        """Hidden options for the names in `dtype.refused_arguments` that no dataclass of this parser has as a
        field: parsed (so the dataclass refuses them with its reason), listed in the epilog, not in the groups.
        Given alone (`--deepspeed`), an option means True, so it always reaches that refusal."""
        for name, refused in getattr(dtype, "refused_arguments", {}).items():
            if name in self._all_field_names() or name in self._refused:
                continue
            self._refused[name] = (dtype, refused)
            convert = string_to_bool if isinstance(refused.off, bool) else str
            self.add_argument(
                *_option_names(name),
                dest=name,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
                type=convert,
                nargs="?",
                const=True,
            )

    def _add_field(self, group: Any, f: dataclasses.Field, kind: _Kind, doc: str) -> None:
        names = _option_names(f.name)
        default = _default_of(f)
        required = default is dataclasses.MISSING
        help_text = doc + ("" if required else f" (default: {_show(default)})")
        # argparse %-formats help strings: a literal "%" in a docstring ("~4% of a step") must be doubled.
        help_text = help_text.replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if required:
            kwargs["required"] = True
        if kind.is_bool and not kind.is_list:
            # `--x` alone means True; `--x false` also works
            words = ",".join(str(c).lower() for c in kind.choices or (True, False))
            kwargs.update(type=kind.convert, nargs="?", const=True, metavar="{" + words + "}")
        else:
            kwargs["type"] = kind.convert
            if kind.choices is not None:
                kwargs["metavar"] = "{" + ",".join(str(c) for c in kind.choices) + "}"
            if kind.is_list:
                kwargs["nargs"] = "+"
        group.add_argument(*names, **kwargs)
        if kind.is_bool and default is True:
            group.add_argument(
                f"--no_{f.name}",
                dest=f.name,
                action="store_false",
                default=argparse.SUPPRESS,
                help=f"Set {f.name} to False.",
            )

    # ------------------------------------------------------------------------------------ parsing
    def parse_args_into_dataclasses(
        self,
        args: Sequence[str] | None = None,
        return_remaining_strings: bool = False,
        look_for_args_file: bool = True,
        args_filename: str | os.PathLike | None = None,
        args_file_flag: str | None = None,
    ) -> tuple[Any, ...]:
        """Parse command-line `args` (default `sys.argv[1:]`) into one instance per dataclass.

        When the first argument is a .json/.yaml/.yml file, its values are read first and the arguments after
        it override them. Args files hold command-line arguments (split at whitespace) placed before the
        command line, so the command line wins: `args_filename` names one; otherwise, with
        `look_for_args_file`, `<script>.args` next to the running script is read when it exists. With
        `args_file_flag` (e.g. "--args_file"), each file given with that flag on the command line is read
        after those, the last one winning. Unlike Hugging Face, a named file that does not exist is an
        error, not skipped. Unknown options are an error unless `return_remaining_strings`, which returns
        them as a last element. Options the caller added to the parser with `add_argument` come back as an
        `argparse.Namespace` after the dataclasses."""
        args = list(sys.argv[1:] if args is None else args)
        args, flagged = _take_args_files(args, args_file_flag)
        file_values: dict[str, Any] = {}
        source = "the command line"
        if args and not args[0].startswith("-") and args[0].lower().endswith(CONFIG_SUFFIXES):
            file_values = self._read_config(args[0])
            source = f"{args[0]} and the command line"
            args = args[1:]
        if args_filename is not None:
            files = [_existing_args_file(args_filename, "args_filename")]
        else:
            script = sys.argv[0] if sys.argv else ""  # empty for an interactive interpreter
            default = Path(script).with_suffix(".args") if look_for_args_file and script else None
            files = [default] if default is not None and default.is_file() else []
        files += [_existing_args_file(path, args_file_flag) for path in flagged]
        args = [word for path in files for word in path.read_text().split()] + args
        namespace, remaining = self._parse_known(args, relax_required=bool(file_values))
        values = {**file_values, **vars(namespace)}
        if remaining and not return_remaining_strings:
            options = [o for a in self._actions for o in a.option_strings]
            raise ValueError(_unknown_keys_message(remaining, options, source="the command line"))
        outputs = self._build(values, allow_extra_keys=False, source=source)
        extra = {k: v for k, v in vars(namespace).items() if k not in self._known_names()}
        if extra:
            outputs.append(argparse.Namespace(**extra))
        if return_remaining_strings:
            outputs.append(remaining)
        return tuple(outputs)

    def parse_dict(self, args: dict[str, Any], allow_extra_keys: bool = False) -> tuple[Any, ...]:
        """One instance per dataclass from a dict; unknown keys are an error (listing close matches) unless
        `allow_extra_keys`."""
        return tuple(self._build(dict(args), allow_extra_keys=allow_extra_keys, source="the dict"))

    def parse_json_file(
        self, json_file: str | os.PathLike, allow_extra_keys: bool = False
    ) -> tuple[Any, ...]:
        """One instance per dataclass from a JSON object file."""
        return tuple(
            self._build(
                self._read_config(json_file), allow_extra_keys=allow_extra_keys, source=str(json_file)
            )
        )

    def parse_yaml_file(
        self, yaml_file: str | os.PathLike, allow_extra_keys: bool = False
    ) -> tuple[Any, ...]:
        """One instance per dataclass from a YAML mapping file."""
        return tuple(
            self._build(
                self._read_config(yaml_file), allow_extra_keys=allow_extra_keys, source=str(yaml_file)
            )
        )

    # ------------------------------------------------------------------------------------ helpers
    def _parse_known(self, args: list[str], *, relax_required: bool) -> tuple[argparse.Namespace, list[str]]:
        """`parse_known_args`; with a config file, required options may come from the file instead."""
        relaxed = [a for a in self._actions if a.required] if relax_required else []
        for action in relaxed:
            action.required = False
        try:
            return self.parse_known_args(args)
        finally:
            for action in relaxed:
                action.required = True

    @staticmethod
    def _read_config(path: str | os.PathLike) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                data = yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: cannot parse: {err}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: expected a mapping of argument names to values, got {type(data).__name__}"
            )
        return data

    def _all_field_names(self) -> set[str]:
        return {name for kinds in self._kinds.values() for name in kinds}

    def _known_names(self) -> set[str]:
        """Field names and refused names: the keys that belong to the dataclasses."""
        return self._all_field_names() | set(self._refused)

    def _build(self, values: dict[str, Any], *, allow_extra_keys: bool, source: str) -> list[Any]:
        known = self._known_names()
        # Options added by the caller with add_argument are theirs, not unknown keys.
        own = {a.dest for a in self._actions if a.dest not in known}
        unknown = [k for k in values if k not in known and k not in own]
        if unknown and not allow_extra_keys:
            raise ValueError(_unknown_keys_message(unknown, known, source=source))
        outputs = []
        for dtype in self.dataclass_types:
            kinds = self._kinds[dtype]
            inputs = {}
            for name, kind in kinds.items():
                if name in values:
                    inputs[name] = kind.coerce(name, values[name])
            for name, (owner, refused) in self._refused.items():
                if (
                    owner is dtype and name in values
                ):  # the constructor refuses it, or accepts its "off" value
                    inputs[name] = _coerce_refused(refused, values[name])
            missing = [
                f.name
                for f in dataclasses.fields(dtype)
                if f.init and f.name not in inputs and _default_of(f) is dataclasses.MISSING
            ]
            if missing:
                raise ValueError(
                    f"{dtype.__name__} is missing required argument(s) {missing} in {source}; give "
                    + ", ".join(f"--{m}" for m in missing)
                )
            outputs.append(dtype(**inputs))
        return outputs


def _take_args_files(args: list[str], flag: str | None) -> tuple[list[str], list[str]]:
    """`args` without the `flag FILE` (or `flag=FILE`) pairs, and those files in order; no flag: unchanged."""
    if flag is None:
        return args, []
    if not flag.startswith("-"):
        raise ValueError(f"args_file_flag={flag!r} must be an option name such as '--args_file'")
    rest: list[str] = []
    files: list[str] = []
    words = iter(args)
    for word in words:
        if word == flag:
            path = next(words, None)
            if path is None or path.startswith("-"):
                raise ValueError(f"{flag} needs a file name after it")
            files.append(path)
        elif word.startswith(f"{flag}="):
            files.append(word.split("=", 1)[1])
        else:
            rest.append(word)
    return rest, files


def _existing_args_file(path: str | os.PathLike, given_as: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{given_as}: args file {path} does not exist")
    return path


def _option_names(name: str) -> list[str]:
    """`--name`, and `--name-with-dashes` when the name has underscores."""
    return [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])


def _coerce_refused(refused: Any, value: Any) -> Any:
    """A config file's "false" for a refused flag whose harmless value is False is that value, as on the
    command line; anything else is passed on as written, for the constructor to refuse."""
    if isinstance(refused.off, bool) and type(value) is str:
        try:
            return string_to_bool(value)
        except argparse.ArgumentTypeError:
            return value
    return value


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _show(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    return repr(value) if isinstance(value, str) else str(value)
