"""The one table of match options (featuremap.options) covers the proto, and the client, the command and
the server are all made from it."""

import argparse
import dataclasses
from typing import get_type_hints

import pytest
from google.protobuf.descriptor import FieldDescriptor

from featuremap import options, wire
from featuremap.client import MatchSettings, match_config
from featuremap.client.cli import build_parser
from featuremap.client.runs import METHOD_DEFAULT, match_settings
from featuremap.service.pipeline.frames import match_options
from featuremap.service.pipeline.plans import MatchOptions
from featuremap.v1 import featuremap_pb2 as pb

#: A value of every option other than its default, as a caller gives it.
GIVEN = dict(templates=["a", "templates/b"], method="ssim", padding="same", border="reflect", border_value=2.5,
             stride=2, top_k=3, threshold=0.5, min_distance=4, subpixel=True, min_visible=0.5, max_overlap=0.25,
             candidates=8, maps="float16", realtime=True, data_range=255.0)


def proto_fields(message=pb.MatchConfig.DESCRIPTOR, prefix=""):
    """Every leaf field of MatchConfig, by path ("peaks.top_k"): the sub-messages' fields, not the sub-messages."""
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from proto_fields(field.message_type, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}"


def test_the_table_has_a_row_for_every_field_of_the_config_and_no_other():
    assert sorted(option.field for option in options.OPTIONS.values()) == sorted(proto_fields())
    assert all(name == option.name for name, option in options.OPTIONS.items())


KINDS = {"names": FieldDescriptor.TYPE_STRING, "choice": FieldDescriptor.TYPE_ENUM,
         "number": FieldDescriptor.TYPE_FLOAT, "whole": FieldDescriptor.TYPE_UINT32,
         "bool": FieldDescriptor.TYPE_BOOL}


@pytest.mark.parametrize("option", options.OPTIONS.values(), ids=list(options.OPTIONS))
def test_each_row_is_of_its_fields_kind_with_the_wires_names(option):
    field = option.descriptor
    assert field.type == KINDS[option.kind]
    assert (option.kind == "names") == field.is_repeated
    if option.kind == "choice":
        prefix = "".join(f"_{c}" if c.isupper() else c for c in field.enum_type.name).strip("_").upper() + "_"
        assert dict(option.choices) == {v.name[len(prefix):].lower(): v.number for v in field.enum_type.values
                                        if v.number}
    else:
        assert option.choices is None
    if option.default is options.UNSET:  # no value of its own: the wire must tell unset apart
        assert option.optional
    assert option.flag is not None or option.why_no_flag, f"{option.name}: a flag, or why not"


def test_the_clients_keywords_are_the_tables():
    assert tuple(get_type_hints(MatchSettings)) == options.KEYWORDS
    assert [name for name, option in options.OPTIONS.items() if not option.keyword] == ["template_thresholds"]
    with pytest.raises(TypeError) as caught:
        match_config(colour="red")
    assert f"use {', '.join(options.KEYWORDS)}" in str(caught.value)


def test_the_servers_options_are_the_tables_with_the_same_defaults():
    names = [field.name for field in dataclasses.fields(MatchOptions)]
    assert sorted(names) == sorted(set(options.OPTIONS) - {"templates"})
    values = options.config_values(pb.MatchConfig())
    assert values.pop("templates") == []
    assert values == dataclasses.asdict(MatchOptions()) == dataclasses.asdict(match_options(pb.MatchConfig()))


def test_every_option_goes_from_the_client_to_the_server_by_the_table():
    config = match_config(**GIVEN)
    read = options.config_values(config)
    assert read.pop("templates") == ["templates/a", "templates/b"]
    assert read.pop("template_thresholds") is False  # a threshold given: the client leaves it
    assert read == {name: value for name, value in GIVEN.items() if name != "templates"}
    # Each row's field, at its path.
    for name, value in GIVEN.items():
        option = options.OPTIONS[name]
        sent = option.wire_value(config)
        if option.choices is not None:
            assert sent == option.choices[value]
        elif name != "templates":
            assert sent == value
    assert dataclasses.asdict(MatchOptions(**read, template_thresholds=False))["maps"] == "float16"


def test_the_clients_default_threshold_is_sent_only_when_no_threshold_is_given():
    default = match_config()
    assert default.peaks.HasField("threshold") and default.peaks.threshold == pytest.approx(0.7)
    assert default.peaks.template_thresholds
    for given, threshold in ((dict(threshold=None), None), (dict(method="ccorr"), None),
                             (dict(threshold=0.25), 0.25), (dict(method="sqdiff_normed"), 0.2)):
        config = match_config(**given)
        value = options.config_values(config)
        assert value["threshold"] == (None if threshold is None else pytest.approx(threshold)), given
        assert value["template_thresholds"] is (given == dict(method="sqdiff_normed")), given
    # The wire has always carried peaks and maps, empty or not.
    assert match_config(top_k=None, threshold=None).HasField("peaks") and match_config().HasField("maps")


def subcommand(name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


@pytest.mark.parametrize("command", ["match", "watch"])
def test_the_commands_match_flags_are_the_tables(command):
    actions = {flag: action for action in subcommand(command)._actions for flag in action.option_strings}
    for option in options.OPTIONS.values():
        flag = option.flag
        if flag is None or command not in flag.commands:
            continue
        action = actions[flag.name]
        assert (action.help, action.metavar, action.dest) == (flag.help, flag.metavar, flag.dest)
        if option.choices is not None:
            assert action.choices == list(option.choices) and action.default == option.default
    # Every flag that sets a match option is a row's.
    dests = {o.flag.dest for o in options.OPTIONS.values() if o.flag is not None}
    setting = {a.dest for a in subcommand(command)._actions if a.dest.replace("template", "templates") in
               options.OPTIONS or a.dest in dests}
    assert setting <= dests


def test_the_commands_settings_are_client_keywords_and_not_given_is_left_out():
    args = build_parser().parse_args(["match", "x.png"])
    assert args.threshold is METHOD_DEFAULT
    assert match_settings(args) == {"templates": None, "method": "ccoeff_normed", "top_k": 1}
    args = build_parser().parse_args(["watch", "v.mp4", "--template", "a", "--threshold", "none", "--top-k", "2",
                                      "--min-visible", "0.5", "--max-overlap", "0", "--candidates", "9",
                                      "--no-realtime"])
    settings = match_settings(args)
    assert set(settings) <= set(options.KEYWORDS)
    assert settings == {"templates": ["a"], "method": "ccoeff_normed", "top_k": 2, "threshold": None,
                        "min_visible": 0.5, "max_overlap": 0.0, "candidates": 9, "realtime": False}
    match_config(**settings)  # the client takes them as they are
